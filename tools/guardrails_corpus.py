#!/usr/bin/env python3
"""Generates the labelled PII evaluation corpus (tests/fixtures/guardrails/pii-eval.jsonl).

Portuguese (70 %) and English sentences, each with 1-3 slots, about half real PII (valid check
digits, real issuer ranges, real numbering plans) and half near-miss decoys of the same shape
(a wrong check digit, an invalid area code, a Luhn failure, order numbers, dates, money, CEPs,
version strings, OIDs, UUIDs, hashes, tracking codes). Each line:
  {"text": ..., "spans": [{"start", "end", "entity"}], "decoys": [{"start", "end", "kind"}]}
with offsets in Unicode code points. Valid values come from Faker (pt_BR) and validate-docbr
(independent implementations of the check digits); Bitcoin addresses are encoded here.

Usage: guardrails_corpus.py [--seed 42] [--sentences 3000] [--out FILE]
Needs: pip install faker validate-docbr (not needed to run the evaluation on the committed file).
"""
import argparse
import hashlib
import json
import random
import string

from faker import Faker
from validate_docbr import CNH, CNS, PIS, TituloEleitoral

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BECH = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
DDD = [11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42, 43, 44, 45, 46, 47,
       48, 49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74, 75, 77, 79, 81, 82, 83, 84, 85, 86, 87,
       88, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99]


def b58check(payload):
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def bech32_address(rng):
    prog = [rng.randrange(256) for _ in range(20)]
    acc, bits, conv = 0, 0, []
    for b in prog:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            conv.append((acc >> bits) & 31)
    if bits:
        conv.append((acc << (5 - bits)) & 31)
    data = [0] + conv

    def polymod(values):
        gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3]
        chk = 1
        for v in values:
            top = chk >> 25
            chk = (chk & 0x1ffffff) << 5 ^ v
            for i in range(5):
                chk ^= gen[i] if ((top >> i) & 1) else 0
        return chk
    hrp = [ord(c) >> 5 for c in "bc"] + [0] + [ord(c) & 31 for c in "bc"]
    pm = polymod(hrp + data + [0] * 6) ^ 1
    checksum = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return "bc1" + "".join(BECH[d] for d in data + checksum)


def luhn_complete(prefix, length, rng):
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(digits)):
        v = int(d)
        if i % 2 == 0:
            v *= 2
            v = v - 9 if v > 9 else v
        total += v
    return digits + str((10 - total % 10) % 10)


def group(num, sizes, sep):
    out, i = [], 0
    for s in sizes:
        out.append(num[i:i + s])
        i += s
    return sep.join(out)


def cpf_valid(d):
    d = [int(c) for c in d]
    for n in (9, 10):
        r = sum(d[i] * (n + 1 - i) for i in range(n)) % 11
        if d[n] != (0 if r < 2 else 11 - r):
            return False
    return len(set(d)) > 1


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        Faker.seed(seed)
        self.br, self.de, self.gb, self.en = Faker("pt_BR"), Faker("de_DE"), Faker("en_GB"), Faker("en_US")
        for f in (self.br, self.de, self.gb, self.en):
            f.seed_instance(seed)

    # ---- real values: (entity, text) -----------------------------------------------------------
    def pii(self):
        r, br = self.rng, self.br
        kind = r.choice(["CPF", "CPF", "CNPJ", "CNPJ", "CREDIT_CARD", "CREDIT_CARD", "EMAIL", "PHONE", "PHONE", "IBAN",
                         "IP_ADDRESS", "US_SSN", "CRYPTO_WALLET", "CNH", "PIS", "CNS", "TITULO_ELEITOR", "RG",
                         "AWS_ACCESS_KEY", "GITHUB_TOKEN"])
        if kind == "CPF":
            v = br.cpf()
            return kind, v if r.random() < 0.6 else v.replace(".", "").replace("-", ""), None
        if kind == "CNPJ":
            if r.random() < 0.15:
                return kind, self.alnum_cnpj(), None
            v = br.cnpj()
            return kind, v if r.random() < 0.6 else v.replace(".", "").replace("/", "").replace("-", ""), None
        if kind == "CREDIT_CARD":
            brand = r.choice(["visa", "mc", "mc2", "amex", "elo", "discover", "jcb", "diners"])
            num = {"visa": lambda: luhn_complete("4", 16, r), "mc": lambda: luhn_complete(str(r.randint(51, 55)), 16, r),
                   "mc2": lambda: luhn_complete(str(r.randint(2221, 2720)), 16, r),
                   "amex": lambda: luhn_complete(r.choice(["34", "37"]), 15, r),
                   "elo": lambda: luhn_complete(r.choice(["636368", "504175", "650031", "451416"]), 16, r),
                   "discover": lambda: luhn_complete("6011", 16, r),
                   "jcb": lambda: luhn_complete(str(r.randint(3528, 3589)), 16, r),
                   "diners": lambda: luhn_complete(r.choice(["36", "38", "300"]), 14, r)}[brand]()
            if brand == "amex":
                return kind, group(num, [4, 6, 5], r.choice([" ", "-"])) if r.random() < 0.5 else num, None
            if len(num) == 16 and r.random() < 0.6:
                return kind, group(num, [4, 4, 4, 4], r.choice([" ", "-"])), None
            return kind, num, None
        if kind == "EMAIL":
            return kind, r.choice([br.email(), self.en.email(), br.free_email(), br.company_email()]), None
        if kind == "PHONE":
            if r.random() < 0.25:
                n = f"{r.randint(2, 9)}{r.randint(0, 8)}{r.randint(0, 9)}"
                x = f"{r.randint(2, 9)}{r.randint(0, 9)}{r.randint(0, 9)}"
                s = f"{r.randint(0, 9999):04d}"
                return kind, r.choice([f"+1 {n} {x} {s}", f"({n}) {x}-{s}", f"{n}-{x}-{s}", f"+1-{n}-{x}-{s}"]), None
            ddd = r.choice(DDD)
            if r.random() < 0.6:
                num = "9" + "".join(r.choice(string.digits) for _ in range(8))
                a, b = num[:5], num[5:]
            else:
                num = str(r.randint(2, 5)) + "".join(r.choice(string.digits) for _ in range(7))
                a, b = num[:4], num[4:]
            return kind, r.choice([f"({ddd}) {a}-{b}", f"+55 {ddd} {a}-{b}", f"+55 ({ddd}) {a}-{b}", f"{ddd} {a}-{b}",
                                   f"({ddd}) {a} {b}"]), None
        if kind == "IBAN":
            v = r.choice([br.iban(), self.de.iban(), self.gb.iban()])
            return kind, " ".join(v[i:i + 4] for i in range(0, len(v), 4)) if r.random() < 0.5 else v, None
        if kind == "IP_ADDRESS":
            return kind, br.ipv4() if r.random() < 0.7 else br.ipv6(), None
        if kind == "US_SSN":
            area = r.choice([i for i in range(1, 900) if i != 666])
            return kind, f"{area:03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}", None
        if kind == "CRYPTO_WALLET":
            if r.random() < 0.5:
                return kind, bech32_address(r), None
            return kind, b58check(bytes([r.choice([0, 5])]) + bytes(r.randrange(256) for _ in range(20))), None
        if kind == "CNH":
            return kind, CNH().generate(), r.choice(["CNH", "carteira de motorista", "habilitação"])
        if kind == "PIS":
            return kind, PIS().generate(mask=True), None
        if kind == "CNS":
            v = CNS().generate()
            return kind, f"{v[:3]} {v[3:7]} {v[7:11]} {v[11:]}", None
        if kind == "TITULO_ELEITOR":
            return kind, TituloEleitoral().generate(), r.choice(["título de eleitor", "título eleitoral"])
        if kind == "RG":
            v = br.rg()
            return kind, f"{v[:2]}.{v[2:5]}.{v[5:8]}-{v[8]}", "RG"
        if kind == "AWS_ACCESS_KEY":
            return kind, "AKIA" + "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(16)), None
        return kind, "ghp_" + "".join(r.choice(string.ascii_letters + string.digits) for _ in range(36)), None

    def alnum_cnpj(self):
        r = self.rng
        while True:
            base = "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(12))
            vals = [ord(c) - 48 for c in base]
            w1 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
            w2 = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
            d1 = sum(a * b for a, b in zip(w1, vals)) % 11
            d1 = 0 if d1 < 2 else 11 - d1
            d2 = sum(a * b for a, b in zip(w2, vals + [d1])) % 11
            d2 = 0 if d2 < 2 else 11 - d2
            v = base + str(d1) + str(d2)
            if any(c.isalpha() for c in base):
                return f"{v[:2]}.{v[2:5]}.{v[5:8]}/{v[8:12]}-{v[12:]}" if r.random() < 0.5 else v

    # ---- decoys: (kind, text) ------------------------------------------------------------------
    def decoy(self):
        r, br = self.rng, self.br
        kind = r.choice(["cpf_bad_dv", "cnpj_bad_dv", "card_bad_luhn", "ssn_invalid", "order", "date", "money",
                         "version", "oid", "cep", "uuid", "tracking", "time", "btc_corrupt", "sha1", "phone_bad_ddd",
                         "iban_bad", "email_no_tld"])
        if kind == "cpf_bad_dv":
            while True:
                v = br.cpf()
                bad = v[:-1] + str((int(v[-1]) + r.randint(1, 9)) % 10)
                if not cpf_valid(bad.replace(".", "").replace("-", "")):
                    return kind, bad if r.random() < 0.6 else bad.replace(".", "").replace("-", "")
        if kind == "cnpj_bad_dv":
            v = br.cnpj()
            return kind, v[:-1] + str((int(v[-1]) + r.randint(1, 9)) % 10)
        if kind == "card_bad_luhn":
            good = luhn_complete("4", 16, r)
            bad = good[:-1] + str((int(good[-1]) + r.randint(1, 9)) % 10)
            return kind, group(bad, [4, 4, 4, 4], " ")
        if kind == "ssn_invalid":
            return kind, r.choice([f"000-{r.randint(10, 99)}-{r.randint(1000, 9999)}", f"666-{r.randint(10, 99)}-{r.randint(1000, 9999)}",
                                   f"{r.randint(900, 999)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}", f"{r.randint(100, 599)}-00-{r.randint(1000, 9999)}"])
        if kind == "order":
            while True:
                v = "".join(r.choice(string.digits) for _ in range(r.choice([6, 8, 10, 12, 13, 14])))
                if not (len(v) == 11 and cpf_valid(v)):
                    return kind, v
        if kind == "date":
            return kind, br.date(pattern=r.choice(["%d/%m/%Y", "%Y-%m-%d", "%d.%m.%Y"]))
        if kind == "money":
            return kind, f"R$ {r.randint(1, 99)}.{r.randint(100, 999)},{r.randint(10, 99)}"
        if kind == "version":
            return kind, f"{r.randint(1, 20)}.{r.randint(0, 30)}.{r.randint(0, 300)}"
        if kind == "oid":
            return kind, "1.3.6.1.4.1." + str(r.randint(100, 60000))
        if kind == "cep":
            return kind, f"{r.randint(10000, 99999)}-{r.randint(100, 999)}"
        if kind == "uuid":
            return kind, str(br.uuid4())
        if kind == "tracking":
            return kind, "".join(r.choice(string.ascii_uppercase) for _ in range(2)) + "".join(r.choice(string.digits) for _ in range(9)) + "BR"
        if kind == "time":
            return kind, f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
        if kind == "btc_corrupt":
            v = b58check(bytes([0]) + bytes(r.randrange(256) for _ in range(20)))
            i = r.randrange(5, len(v))
            return kind, v[:i] + r.choice([c for c in B58 if c != v[i]]) + v[i + 1:]
        if kind == "sha1":
            return kind, hashlib.sha1(str(r.random()).encode()).hexdigest()
        if kind == "phone_bad_ddd":
            return kind, f"({r.choice([10, 20, 23, 25, 26, 29, 30, 36, 39, 40, 50, 52, 56, 60, 70, 72, 76, 78, 80, 90])}) 9{r.randint(1000, 9999)}-{r.randint(1000, 9999)}"
        if kind == "iban_bad":
            v = self.de.iban()
            return kind, v[:2] + f"{(int(v[2:4]) + r.randint(1, 50)) % 100:02d}" + v[4:]
        return kind, br.user_name() + "@" + br.domain_word()

    def sentence(self):
        r = self.rng
        pt = r.random() < 0.7
        slots = r.randint(1, 3)
        text, spans, decoys = "", [], []
        lead_pt = ["Olá, segue o dado: ", "Por favor, confira ", "O cliente informou ", "Registro: ", "Anote aí: ",
                   "Na planilha consta ", "Conforme conversamos, ", "Atualize o cadastro com "]
        lead_en = ["Hi, here it is: ", "Please check ", "The customer provided ", "Record: ", "As discussed, ",
                   "Update the profile with "]
        joins_pt = [" e também ", "; além disso ", ", depois ", " e "]
        joins_en = [" and also ", "; plus ", ", then ", " and "]
        tail_pt = [".", " obrigado.", " até amanhã.", "!"]
        tail_en = [".", " thanks.", " see you.", "!"]
        text = r.choice(lead_pt if pt else lead_en)
        for i in range(slots):
            if i:
                text += r.choice(joins_pt if pt else joins_en)
            if r.random() < 0.5:
                entity, value, context = self.pii()
                if context:
                    text += context + " "
                start = len(text)
                text += value
                spans.append({"start": start, "end": len(text), "entity": entity})
            else:
                kind, value = self.decoy()
                label = {"order": "pedido " if pt else "order ", "date": "em " if pt else "on ", "version": "versão " if pt else "version ",
                         "money": "valor " if pt else "amount ", "cep": "CEP ", "tracking": "rastreio " if pt else "tracking "}.get(kind, "")
                text += label
                start = len(text)
                text += value
                decoys.append({"start": start, "end": len(text), "kind": kind})
        text += r.choice(tail_pt if pt else tail_en)
        return {"text": text, "spans": spans, "decoys": decoys}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sentences", type=int, default=3000)
    ap.add_argument("--out", default="tests/fixtures/guardrails/pii-eval.jsonl")
    args = ap.parse_args()
    gen = Gen(args.seed)
    with open(args.out, "w") as f:
        for _ in range(args.sentences):
            f.write(json.dumps(gen.sentence(), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
