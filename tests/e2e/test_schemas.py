"""The JSON Schemas in schemas/ (generated from the Rust configuration types by
`tollgate schema --write`) agree with what the filters accept: every configuration we ship
validates against its schema and is accepted by the filter's own parser (the `tollgate validate`
command runs the same core code as `on_configure`), and typical mistakes are refused by both."""
import copy
import json
import os
import re
import subprocess

import jsonschema
import pytest
import yaml

from harness import ROOT, envoy_config

CLI = os.path.join(ROOT, "target", "release", "tollgate")
SCHEMAS = os.path.join(ROOT, "schemas")


def schema(filter_name):
    with open(os.path.join(SCHEMAS, f"{filter_name}.schema.json")) as f:
        return json.load(f)


def load(relative):
    with open(os.path.join(ROOT, relative)) as f:
        return yaml.safe_load(f)


def compose_plugin_config():
    text = open(os.path.join(ROOT, "examples", "docker-compose", "envoy.yaml")).read()
    return json.loads(re.search(r"value: \|\n((?:\s{20}.*\n)+)", text).group(1))


def istio_plugin_configs():
    """(filter, pluginConfig) of every WasmPlugin in examples/istio."""
    out = []
    directory = os.path.join(ROOT, "examples", "istio")
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if name.endswith(".yaml"):
            for doc in yaml.safe_load_all(open(os.path.join(directory, name))):
                if doc and doc.get("kind") == "WasmPlugin":
                    filter_name = doc["metadata"]["labels"]["tollgate.dev/filter"]
                    out.append((f"istio/{name}:{doc['metadata']['name']}", filter_name, doc["spec"]["pluginConfig"]))
                if doc and doc.get("kind") == "EnvoyFilter":
                    filter_name = doc["metadata"]["labels"]["tollgate.dev/filter"]
                    for patch in doc["spec"]["configPatches"]:
                        if patch["applyTo"] == "EXTENSION_CONFIG":
                            value = patch["patch"]["value"]["typed_config"]["config"]["configuration"]["value"]
                            out.append((f"istio/{name}:{doc['metadata']['name']}", filter_name, json.loads(value)))
    return out


SHIPPED = [
    ("examples/quota/local.json", "tollgate", lambda: load("examples/quota/local.json")),
    ("examples/quota/global-envoy-ratelimit.json", "tollgate", lambda: load("examples/quota/global-envoy-ratelimit.json")),
    ("examples/quota/global-check-report.json", "tollgate", lambda: load("examples/quota/global-check-report.json")),
    ("examples/provider-rewrite/providers.json", "tollgate", lambda: load("examples/provider-rewrite/providers.json")),
    # `api_keys` there configures Envoy's API-key filter (tools/envoy_config.py removes it).
    ("examples/access/api-keys.json", "tollgate",
     lambda: envoy_config.without_api_keys(load("examples/access/api-keys.json"))),
    ("examples/guardrails/lgpd-mask.yaml", "guardrails", lambda: load("examples/guardrails/lgpd-mask.yaml")),
    ("make run (RUN_CONFIG_MOCK)", "tollgate", lambda: envoy_config.RUN_CONFIG_MOCK),
    ("make run PROVIDER=openai (RUN_CONFIG)", "tollgate", lambda: envoy_config.RUN_CONFIG),
    ("examples/docker-compose/envoy.yaml", "tollgate", compose_plugin_config),
] + [(name, f, (lambda c=c: c)) for name, f, c in istio_plugin_configs()]


def env_secrets(config):
    """Every `{"env": NAME}` key, given a value so `validate` finds it in the environment."""
    names = set(re.findall(r'"env": "([A-Z0-9_]+)"', json.dumps(config)))
    return {**os.environ, **{n: "test-value" for n in names}}


def accepted(filter_name, config, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    run = subprocess.run([CLI, "validate", "--filter", filter_name, "--config", str(path)],
                         capture_output=True, text=True, env=env_secrets(config))
    return run.returncode == 0, run.stderr.strip()


@pytest.mark.parametrize("name,filter_name,config", SHIPPED, ids=[s[0] for s in SHIPPED])
def test_every_shipped_configuration_matches_its_schema_and_the_filter(name, filter_name, config, tmp_path):
    config = config()
    jsonschema.validate(config, schema(filter_name), cls=jsonschema.Draft202012Validator)
    ok, error = accepted(filter_name, config, tmp_path)
    assert ok, f"{name}: {error}"


def test_the_shipped_list_covers_the_istio_examples():
    assert len(istio_plugin_configs()) >= 5


MISTAKES = [
    # (what, filter, config mutation, the field the filter's error names)
    ("unknown stage", "tollgate", lambda c: c.update(quotas={}), "quotas"),
    ("typo in a nested field", "tollgate", lambda c: c["quota"]["limits"][0].update(windw="minute"), "windw"),
    ("unknown enum value", "tollgate", lambda c: c["quota"].update(mode="observe"), "quota.mode"),
    ("wrong type", "tollgate", lambda c: c["token_counter"].update(max_event_bytes="lots"), "token_counter.max_event_bytes"),
    ("missing required field", "tollgate", lambda c: c["quota"]["limits"][0].pop("window"), "window"),
    ("unknown backend kind", "tollgate", lambda c: c["provider_rewrite"]["backends"]["openai"].update(kind="cohere"),
     "provider_rewrite.backends.openai.kind"),
    ("guardrails typo", "guardrails", lambda c: c["response"].update(restor=True), "restor"),
    ("guardrails bad action", "guardrails", lambda c: c["entities"].update(CPF="encrypt"), "entities"),
]


@pytest.mark.parametrize("what,filter_name,mutate,field", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_schema_and_filter_refuse_the_same_mistakes(what, filter_name, mutate, field, tmp_path):
    base = envoy_config.RUN_CONFIG_MOCK if filter_name == "tollgate" else load("examples/guardrails/lgpd-mask.yaml")
    config = copy.deepcopy(base)
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema(filter_name), cls=jsonschema.Draft202012Validator)
    ok, error = accepted(filter_name, config, tmp_path)
    assert not ok and field in error, error
