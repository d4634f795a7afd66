#!/usr/bin/env node
// Checks tokenizer fixtures (tokenizer_gguf.mjs) against Hugging Face tokenizers, the library whose
// semantics thaw's tokenizer follows: every case where llama.cpp's ids differ from HF's is
// printed with both. Those are the cases tokenizer_vectors_test.cpp lists as llama.cpp
// deviations. Not run in CI.
//
//   node tools/golden/tokenizer_hf_check.mjs --hf DIR [--shared /work/shared/tokenizers] FIXTURE...
//
// DIR is a folder where `npm install tokenizers@0.23.2` was run (the Rust library's Node binding,
// prebuilt).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

function parse_args(argv) {
  const a = { shared: "/work/shared/tokenizers", fixtures: [] };
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i] === "--hf" || argv[i] === "--shared") a[argv[i].slice(2)] = argv[++i];
    else if (argv[i].startsWith("--")) throw new Error(`bad argument '${argv[i]}'`);
    else a.fixtures.push(argv[i]);
  }
  if (!a.hf || !a.fixtures.length) throw new Error("usage: --hf DIR [--shared DIR] FIXTURE...");
  return a;
}

async function main() {
  const a = parse_args(process.argv.slice(2));
  const { Tokenizer } = createRequire(path.resolve(a.hf) + "/")("tokenizers");
  for (const file of a.fixtures) {
    const fx = JSON.parse(fs.readFileSync(file, "utf8"));
    const tok = Tokenizer.fromFile(path.join(a.shared, fx.tokenizer));
    let n = 0;
    for (const c of fx.cases) {
      const hf = (await tok.encode(c.text, null, { addSpecialTokens: false })).getIds();
      if (JSON.stringify(hf) === JSON.stringify(c.ids)) continue;
      ++n;
      console.log(`${fx.vocab} ${c.source} ${JSON.stringify(c.text)}\n  llama.cpp ${JSON.stringify(c.ids)}\n  HF        ${JSON.stringify(hf)}`);
    }
    console.log(`${file}: ${fx.cases.length} cases, ${n} where llama.cpp differs from HF`);
  }
}

main().catch((e) => { console.error(`tokenizer_hf_check.mjs: ${e.message}`); process.exit(1); });
