#!/usr/bin/env python3
"""Builds filters/core/testdata/estimator/corpus.jsonl: the mixed-language corpus on which the
prompt-token estimator is fitted and measured against tiktoken's o200k counts.

Sources (all redistributable; each entry records its source):
  - Vim tutor (English, pt_BR, zh_CN)          /usr/share/vim/vim90/tutor   (Vim licence)
  - CPython test texts for CJK codecs          Lib/test/cjkencodings         (PSF licence)
  - CPython stdlib docstrings and source code  Lib/*.py                      (PSF licence)
  - Rust sources of crates in ~/.cargo/registry (serde_json, memchr, …)      (MIT/Apache-2.0)
  - Chat prompts and JSON requests written for this corpus                    (Apache-2.0)

Run on a Debian machine with vim-runtime and CPython 3.11; the output is committed, so tests do
not depend on these files. Deterministic (fixed seed).
"""
import ast
import glob
import json
import os
import random
import sys
import sysconfig

random.seed(20261127)
OUT = os.path.join(os.path.dirname(__file__), "..", "filters", "core", "testdata", "estimator", "corpus.jsonl")
TUTOR = "/usr/share/vim/vim90/tutor"
STDLIB = sysconfig.get_paths()["stdlib"]

entries = []


def add(lang, source, text):
    text = text.strip("\n")
    if 80 <= len(text.encode()) <= 6000:
        entries.append({"lang": lang, "source": source, "text": text})


def paragraphs(path, lang, source, limit, group=3):
    with open(path, encoding="utf-8") as f:
        blocks = [b for b in f.read().split("\n\n") if b.strip() and not set(b.strip()) <= set("=~-* ")]
    for i in range(0, len(blocks), group):
        add(lang, source, "\n\n".join(blocks[i : i + group]))
        if sum(1 for e in entries if e["source"] == source) >= limit:
            break


# --- prose -----------------------------------------------------------------------------------
paragraphs(f"{TUTOR}/tutor.utf-8", "en", "vim-tutor-en", 45)
paragraphs(f"{TUTOR}/tutor.pt.utf-8", "pt", "vim-tutor-pt_BR", 45)
paragraphs(f"{TUTOR}/tutor.zh_cn.utf-8", "zh", "vim-tutor-zh_CN", 45)
# Beyond the five required kinds, so other scripts are not estimated from nothing.
paragraphs(f"{TUTOR}/tutor.ru.utf-8", "ru", "vim-tutor-ru", 20)
paragraphs(f"{TUTOR}/tutor.ja.utf-8", "ja", "vim-tutor-ja", 20)
paragraphs(f"{TUTOR}/tutor.ko.utf-8", "ko", "vim-tutor-ko", 20)
for name in ("gb2312", "gbk", "gb18030", "big5"):
    path = os.path.join(STDLIB, "test", "cjkencodings", f"{name}-utf8.txt")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            add("zh", f"cpython-cjkencodings-{name}", f.read())

docstrings = []
for module in ("json/__init__.py", "argparse.py", "collections/__init__.py", "textwrap.py", "difflib.py",
               "functools.py", "statistics.py", "http/client.py", "email/message.py", "logging/__init__.py",
               "pathlib.py", "subprocess.py", "shutil.py", "tarfile.py", "zipfile.py", "datetime.py"):
    path = os.path.join(STDLIB, module)
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 300:
                docstrings.append((module, doc))
random.shuffle(docstrings)
for module, doc in docstrings[:60]:
    add("en", f"cpython-docstring-{module}", doc)

# --- chat prompts written for this corpus ---------------------------------------------------
PROMPTS = {
    "en": [
        "Summarise the attached incident report in five bullet points for an executive audience. Focus on customer impact, root cause, and the follow-up actions with owners and dates.",
        "You are a helpful assistant that answers questions about our internal billing API. If you do not know the answer, say so and suggest who to ask. Never invent endpoints.",
        "Write a polite email to a supplier explaining that the March invoice was charged twice and asking for a refund of the duplicate amount within ten business days.",
        "Explain the difference between optimistic and pessimistic concurrency control, with one example of each from a relational database and one from a key-value store.",
        "Translate the following product description into plain English for a twelve-year-old: 'A hermetically sealed, vacuum-insulated vessel that maintains beverage temperature for extended durations.'",
        "Given the log lines below, identify which request failed first and why. Quote the exact timestamp and the upstream host. 2026-03-04T10:15:02Z upstream=10.0.3.7:8443 status=503 retries=2",
        "Draft a short onboarding checklist for a new site reliability engineer joining a team that runs Envoy at the edge, with access requests, dashboards to bookmark and the first three runbooks to read.",
        "What are the trade-offs of storing session state in a signed cookie versus a server-side store such as Redis? Consider security, latency, horizontal scaling and revocation.",
        "Classify each customer message as billing, technical, account or other, and return a JSON array of objects with the fields id and category. Messages: 1) my card was declined 2) the app crashes on login 3) how do I change my email",
        "Rewrite this paragraph to be more concise without losing any facts: The meeting, which had originally been scheduled for Tuesday afternoon at three o'clock, has now been moved, due to a conflict, to Wednesday morning.",
    ],
    "pt": [
        "Resuma o relatório de incidente em cinco tópicos para a diretoria, destacando o impacto para os clientes, a causa raiz e as ações de acompanhamento com responsáveis e prazos.",
        "Você é um assistente que responde dúvidas sobre a nossa API de cobrança. Se não souber a resposta, diga isso claramente e indique a equipe responsável. Nunca invente rotas.",
        "Escreva um e-mail educado para o fornecedor explicando que a fatura de março foi cobrada em duplicidade e solicitando o estorno do valor em até dez dias úteis.",
        "Explique, em linguagem simples, o que a Lei Geral de Proteção de Dados (LGPD) exige de uma empresa que compartilha dados pessoais de clientes com um prestador de serviços no exterior.",
        "Preciso de uma receita de pão de queijo sem lactose para vinte pessoas. Liste os ingredientes com as quantidades e descreva o modo de preparo passo a passo.",
        "Classifique cada mensagem do cliente como cobrança, suporte técnico, cadastro ou outros e devolva um JSON com os campos id e categoria. Mensagens: 1) meu cartão foi recusado 2) o aplicativo fecha ao entrar 3) como altero meu e-mail",
        "Reescreva o parágrafo abaixo de forma mais concisa, sem perder nenhuma informação: A reunião, que estava inicialmente marcada para terça-feira às quinze horas, foi transferida, por conflito de agenda, para quarta-feira pela manhã.",
        "Quais são as vantagens e desvantagens de guardar o estado da sessão em um cookie assinado em vez de um armazenamento no servidor como o Redis? Considere segurança, latência, escalabilidade e revogação.",
        "Traduza para o inglês a seguinte mensagem de erro e sugira uma versão mais amigável para o usuário final: 'Não foi possível concluir a operação porque o tempo limite de conexão com o servidor foi excedido.'",
        "Monte um plano de estudos de oito semanas para um desenvolvedor júnior aprender Rust, com metas semanais, exercícios práticos e sugestões de projetos pequenos para consolidar o conteúdo.",
        "Analise o contrato de prestação de serviços em anexo e aponte as cláusulas que tratam de rescisão antecipada, multa por atraso, confidencialidade e foro de eleição.",
        "O cliente informou que a entrega atrasou três vezes neste mês. Redija uma resposta empática, ofereça um cupom de desconto de quinze por cento e explique as medidas que serão tomadas.",
    ],
    "zh": [
        "请把下面的事故报告总结成五个要点，面向管理层，重点说明对客户的影响、根本原因以及后续行动的负责人和截止日期。",
        "你是一个回答内部计费接口问题的助手。如果你不知道答案，请直接说明，并建议应该咨询哪个团队。不要编造接口地址。",
        "请给供应商写一封礼貌的邮件，说明三月份的发票被重复扣款，并要求在十个工作日内退还重复的金额。",
        "用简单的语言解释乐观并发控制和悲观并发控制的区别，并分别举一个关系型数据库和键值存储的例子。",
        "请为一名刚加入团队的网站可靠性工程师写一份入职清单，包括需要申请的权限、应该收藏的监控面板以及最先阅读的三份运维手册。",
        "把每条客户留言分类为账单、技术、账户或其他，并返回一个包含 id 和 category 字段的 JSON 数组。留言：1）我的银行卡被拒绝了 2）登录时应用崩溃 3）怎么修改邮箱",
        "在不丢失任何信息的前提下，把下面这段话改写得更简洁：原定于星期二下午三点举行的会议，由于时间冲突，现已改到星期三上午。",
        "比较在签名的 Cookie 中保存会话状态与使用 Redis 这样的服务端存储各有什么优缺点？请从安全性、延迟、水平扩展和吊销几个方面考虑。",
        "请为初级开发者制定一个为期八周的 Rust 学习计划，包括每周目标、练习题以及用于巩固知识的小项目建议。",
        "根据下面的日志，找出最先失败的请求及其原因，并给出准确的时间戳和上游主机地址。",
    ],
}
for lang, prompts in PROMPTS.items():
    for i, prompt in enumerate(prompts):
        add(lang, "written-prompt", prompt)
        # Longer variants: a prompt with surrounding conversation context.
        other = prompts[(i + 3) % len(prompts)]
        add(lang, "written-prompt-pair", f"{prompt}\n\n{other}")

# --- code --------------------------------------------------------------------------------------
functions = []
for module in ("json/decoder.py", "textwrap.py", "difflib.py", "statistics.py", "heapq.py", "bisect.py",
               "base64.py", "csv.py", "ipaddress.py", "shlex.py", "fnmatch.py", "string.py"):
    path = os.path.join(STDLIB, module)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            segment = ast.get_source_segment(source, node)
            if segment and 300 < len(segment) < 5000:
                functions.append((module, segment))
random.shuffle(functions)
for module, segment in functions[:55]:
    add("code", f"cpython-source-{module}", segment)

registry = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
rust_files = []
for crate in ("serde_json-1", "memchr-2", "crc32fast-1", "miniz_oxide-0", "proptest-1"):
    for base in registry:
        for root in glob.glob(os.path.join(base, crate + "*")):
            rust_files += sorted(glob.glob(os.path.join(root, "src", "**", "*.rs"), recursive=True))
random.shuffle(rust_files)
for path in rust_files[:40]:
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = random.randrange(0, max(1, len(text) - 2500))
    # Start at a line boundary.
    start = text.find("\n", start) + 1
    crate = path.split("/src/")[0].rsplit("/", 1)[-1]
    add("code", f"rust-source-{crate}", text[start : start + random.randrange(800, 2500)])

# --- JSON --------------------------------------------------------------------------------------
texts = [e["text"] for e in entries if e["lang"] in ("en", "pt", "zh")]
for i in range(60):
    messages = [{"role": "system", "content": random.choice(PROMPTS["en"])}]
    for _ in range(random.randrange(1, 4)):
        messages.append({"role": "user", "content": random.choice(texts)[:600]})
        messages.append({"role": "assistant", "content": random.choice(texts)[:400]})
    request = {"model": random.choice(["gpt-4o", "gpt-4.1-mini", "o3"]), "messages": messages,
               "temperature": round(random.random(), 2), "stream": bool(i % 2)}
    if i % 3 == 0:
        request["tools"] = [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city",
                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                                            "required": ["city"]}}}]
    indent = None if i % 2 else 2
    add("json", "written-chat-request", json.dumps(request, ensure_ascii=bool(i % 4 == 0), indent=indent))
for i in range(25):
    record = {"id": f"ord_{random.randrange(10**8):08d}", "status": random.choice(["paid", "pending", "refunded"]),
              "items": [{"sku": f"SKU-{random.randrange(9999):04d}", "qty": random.randrange(1, 5),
                         "price": round(random.random() * 200, 2)} for _ in range(random.randrange(1, 8))],
              "customer": {"name": random.choice(["Ana Souza", "John Smith", "李雷"]), "tier": random.choice(["gold", "basic"])},
              "created_at": f"2026-0{random.randrange(1, 9)}-1{random.randrange(0, 9)}T10:{random.randrange(10, 59)}:00Z"}
    add("json", "written-records", json.dumps(record, ensure_ascii=False, indent=None if i % 2 else 1))

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w", encoding="utf-8") as f:
    for entry in entries:
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")
by_lang = {}
for e in entries:
    by_lang[e["lang"]] = by_lang.get(e["lang"], 0) + 1
print(f"{len(entries)} entries, {os.path.getsize(OUT)} bytes: {by_lang}", file=sys.stderr)
