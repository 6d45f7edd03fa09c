// `make asyncapi-check`: parse and validate an AsyncAPI document with @asyncapi/parser 3 (from .tools).
// Prints every diagnostic; exits 1 on an error (warnings and hints are printed, not fatal).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const require = createRequire(resolve(".tools/node_modules/"));
const { Parser } = require("@asyncapi/parser");

const file = process.argv[2] ?? "docs/asyncapi.json";
const { document, diagnostics } = await new Parser().parse(readFileSync(file, "utf8"));
const severities = ["error", "warning", "info", "hint"];
for (const d of diagnostics) {
  console.log(`${severities[d.severity]} ${d.code} at ${d.path.join(".")}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (!document || errors.length) {
  console.log(`${file}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`${file}: AsyncAPI ${document.version()}, ${document.operations().length} operations,`
  + ` ${document.channels().length} channels, ${document.messages().length} messages: valid`);
