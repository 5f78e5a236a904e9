// Validates Kubernetes resources (JSON documents, one per line on stdin) against Istio's CRD
// schemas: the validators of @kubernetes-models/istio are generated from Istio's own CRD
// definitions (OpenAPI v3), so types, enums and required fields are checked as the API server
// checks them. The API server also rejects unknown fields (kubectl's strict field validation);
// the CRD validators do not, so every field name outside the free-form parts (labels,
// pluginConfig, EnvoyFilter patch values) must be one the kind's schema knows.
// Prints one JSON line per document: {"kind", "name", "errors": [...]}.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { WasmPlugin } from "@kubernetes-models/istio/extensions.istio.io/v1alpha1/WasmPlugin";
import { EnvoyFilter } from "@kubernetes-models/istio/networking.istio.io/v1alpha3/EnvoyFilter";
import { ServiceEntry } from "@kubernetes-models/istio/networking.istio.io/v1/ServiceEntry";
import { DestinationRule } from "@kubernetes-models/istio/networking.istio.io/v1/DestinationRule";

// The compiled validator of a kind (not an exported path of the package: read from its files).
const PACKAGE = join(dirname(fileURLToPath(import.meta.url)), "node_modules", "@kubernetes-models", "istio");
const schemaSource = (file) => readFileSync(join(PACKAGE, "_schemas", `${file}.js`), "utf8");

const KINDS = {
  "extensions.istio.io/v1alpha1/WasmPlugin": [WasmPlugin, "ExtensionsIstioIoV1alpha1WasmPlugin"],
  "networking.istio.io/v1alpha3/EnvoyFilter": [EnvoyFilter, "NetworkingIstioIoV1alpha3EnvoyFilter"],
  "networking.istio.io/v1/ServiceEntry": [ServiceEntry, "NetworkingIstioIoV1ServiceEntry"],
  "networking.istio.io/v1/DestinationRule": [DestinationRule, "NetworkingIstioIoV1DestinationRule"],
};
// Free-form values (google.protobuf.Struct or maps): their keys are not schema fields.
const FREE = new Set(["labels", "annotations", "matchLabels", "pluginConfig", "value"]);

function unknownFields(value, source, path, out) {
  if (Array.isArray(value)) {
    value.forEach((item, i) => unknownFields(item, source, `${path}[${i}]`, out));
  } else if (value && typeof value === "object") {
    for (const [key, child] of Object.entries(value)) {
      const known = source.includes(`.${key}`) || source.includes(`"${key}"`);
      if (!known && path !== "" && !path.endsWith("metadata")) out.push(`${path}.${key}: unknown field`);
      if (!FREE.has(key)) unknownFields(child, source, path ? `${path}.${key}` : key, out);
    }
  }
}

const input = readFileSync(0, "utf8").split("\n").filter((line) => line.trim());
for (const line of input) {
  const doc = JSON.parse(line);
  const entry = KINDS[`${doc.apiVersion}/${doc.kind}`];
  const errors = [];
  if (!entry) {
    errors.push(`no schema for ${doc.apiVersion} ${doc.kind}`);
  } else {
    const [Model, file] = entry;
    try {
      new Model(doc).validate();
    } catch (e) {
      errors.push(String(e.message || e));
    }
    unknownFields(doc.spec, schemaSource(file), "spec", errors);
  }
  console.log(JSON.stringify({ kind: doc.kind, name: doc.metadata?.name, errors }));
}
