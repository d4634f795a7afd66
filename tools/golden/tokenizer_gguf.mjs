#!/usr/bin/env node
// Tokenizer fixtures from llama.cpp for the tokenizer.json files thaw ships (see README.md). Not
// run in CI.
//
//   node tools/golden/tokenizer_gguf.mjs --vocab llama2-shared|qwen3 \
//        --llama-tokenize /path/llama_tokenize [--shared /work/shared/tokenizers] \
//        [--scores merges|id|flat] [--seed 1] [--random 200] [--llama-version TEXT] \
//        [--gguf KEEP.gguf] \
//        --out tests/fixtures/tokenizer/NAME.json
//
// 1. vocab_gguf() converts tokenizer.json to a vocab-only GGUF the way llama.cpp's
//    convert_hf_to_gguf.py would (token types, merges, added tokens; see the notes below).
// 2. The inputs are the texts of llama.cpp's vectors/llama-spm.inp, then extra_texts, then
//    random_texts(seed, random) (defaults 1 and 200).
// 3. llama_tokenize (llama_tokenize.c, linked against the prebuilt llama.cpp) tokenizes each
//    with add_special = false, parse_special = false.
// 4. The fixture keeps every text with llama.cpp's ids.
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { T, write_gguf } from "./gguf.mjs";
import { mulberry32 } from "./mulberry32.mjs";

// llama.cpp's token types (llama_token_type).
const NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, BYTE = 6;

// The separator of llama.cpp's tests/*.inp files; test-tokenizer-0.cpp splits on it, a text being
// everything before the next separator (so the file ends with one and no empty text follows).
const SEP = "\n__ggml_vocab_test__\n";

export function split_inp(raw) {
  const texts = [];
  for (let pos = 0; pos < raw.length;) {
    const next = raw.indexOf(SEP, pos);
    if (next < 0) { texts.push(raw.slice(pos)); break; }
    texts.push(raw.slice(pos, next));
    pos = next + SEP.length;
  }
  return texts;
}

const join_inp = (texts) => texts.map((t) => t + SEP).join("");

// convert_hf_to_gguf's does_token_look_special(): added tokens it types CONTROL although
// tokenizer.json does not mark them special.
const looks_special = (t) => ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(t) ||
  (t.startsWith("<|") && t.endsWith("|>")) || (t.startsWith("<｜") && t.endsWith("｜>")) ||
  (t.startsWith("<unused") && t.endsWith(">"));

const merge_pairs = (model) => model.merges.map((m) => (Array.isArray(m) ? m : m.split(" ")));

// SentencePiece-style BPE (Llama 2, Mistral): llama.cpp's SPM tokenizer merges the adjacent pair
// whose concatenation is in the vocabulary with the highest *score* (ties: leftmost), where
// Hugging Face merges the pair of lowest *rank* in model.merges. Scores:
//   merges: score(t) = -(lowest rank of a merge that makes t), so llama.cpp's order is HF's.
//           Tokens no merge makes (characters, bytes, specials) score below every merged token;
//           they are never the result of a pair, so their score is never compared.
//   id:     score(t) = -id, SentencePiece's own order (vocabularies are sorted by score).
//   flat:   -1000 for every token, what convert_hf_to_gguf.py writes (LlamaHfVocab) for a Llama
//           tokenizer.json without tokenizer.model; llama.cpp then merges leftmost-first.
function spm_scores(model, n, how) {
  if (how === "flat") return new Array(n).fill(-1000);
  if (how === "id") return Array.from({ length: n }, (_, i) => -i);
  if (how !== "merges") throw new Error(`--scores ${how}: expected merges, id or flat`);
  const pairs = merge_pairs(model);
  const scores = Array.from({ length: n }, (_, i) => -(pairs.length + i));
  for (let r = pairs.length - 1; r >= 0; --r) {
    const id = model.vocab[pairs[r][0] + pairs[r][1]];
    if (id === undefined) throw new Error(`merge ${r} '${pairs[r].join(" ")}' makes no token`);
    scores[id] = -r;
  }
  return scores;
}

function token_table(tok) {
  const ids = [...Object.values(tok.model.vocab), ...(tok.added_tokens ?? []).map((t) => t.id)];
  const n = ids.reduce((m, id) => Math.max(m, id), -1) + 1;
  const tokens = new Array(n).fill(null);
  for (const [piece, id] of Object.entries(tok.model.vocab)) tokens[id] = piece;
  for (const t of tok.added_tokens ?? []) tokens[t.id] = t.content;
  const missing = tokens.findIndex((t) => t === null);
  if (missing >= 0) throw new Error(`no token with id ${missing}`);
  return tokens;
}

/// Writes a vocab-only GGUF for `tokenizer_json`. llama.cpp needs only general.architecture
/// besides the tokenizer keys when loading with vocab_only (llama_model_base::load_hparams
/// returns before the first hparam). Returns a description of what was written.
export function vocab_gguf(tokenizer_json, gguf_path, { scores: how = "merges" } = {}) {
  const tok = JSON.parse(fs.readFileSync(tokenizer_json, "utf8"));
  if (tok.model?.type !== "BPE") throw new Error(`${tokenizer_json}: model.type ${tok.model?.type}, expected BPE`);
  const tokens = token_table(tok);
  const types = new Array(tokens.length).fill(NORMAL);
  const added = new Map((tok.added_tokens ?? []).map((t) => [t.id, t]));
  const kv = [["general.name", T.str, path.basename(path.dirname(tokenizer_json))]];
  let desc;
  if (tok.model.byte_fallback) {
    // _set_vocab_llama_hf: BYTE for <0xXX>, CONTROL for special tokens; the unknown token is
    // UNKNOWN as in a SentencePiece model (llama.cpp types it so when converting tokenizer.model).
    for (let i = 0; i < tokens.length; ++i) {
      if (/^<0x[0-9A-Fa-f]{2}>$/.test(tokens[i])) types[i] = BYTE;
      else if (added.get(i)?.special) types[i] = CONTROL;
      else if (added.has(i)) types[i] = USER_DEFINED;
    }
    const unk = tok.model.unk_token !== undefined ? tok.model.vocab[tok.model.unk_token] : undefined;
    if (unk !== undefined) types[unk] = UNKNOWN;
    const prefix = (tok.normalizer?.normalizers ?? [tok.normalizer]).some((n) => n?.type === "Prepend");
    kv.unshift(["general.architecture", T.str, "llama"]);
    kv.push(
      ["tokenizer.ggml.model", T.str, "llama"],
      ["tokenizer.ggml.pre", T.str, "default"],
      ["tokenizer.ggml.tokens", T.arr, [T.str, tokens]],
      ["tokenizer.ggml.scores", T.arr, [T.f32, spm_scores(tok.model, tokens.length, how)]],
      ["tokenizer.ggml.token_type", T.arr, [T.i32, types]],
      ["tokenizer.ggml.add_space_prefix", T.bool, prefix],
      ["tokenizer.ggml.unknown_token_id", T.u32, unk ?? 0],
      ["tokenizer.ggml.bos_token_id", T.u32, tokens.indexOf("<s>")],
      ["tokenizer.ggml.eos_token_id", T.u32, tokens.indexOf("</s>")]);
    desc = { model: "llama", scores: how, add_space_prefix: prefix };
  } else {
    // get_vocab_base + _set_vocab_gpt2: added tokens CONTROL when special or looking special,
    // USER_DEFINED otherwise; merges as "a b".
    for (const [id, t] of added) types[id] = t.special || looks_special(t.content) ? CONTROL : USER_DEFINED;
    const pre = tok.pre_tokenizer?.pretokenizers?.[0]?.pattern?.Regex;
    const qwen2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    if (pre !== qwen2) throw new Error(`${tokenizer_json}: pre-tokenizer regex is not Qwen2's; only qwen2 is converted`);
    const id_of = (s) => tokens.indexOf(s);
    kv.unshift(["general.architecture", T.str, "qwen3"]);
    kv.push(
      ["tokenizer.ggml.model", T.str, "gpt2"],
      ["tokenizer.ggml.pre", T.str, "qwen2"],
      ["tokenizer.ggml.tokens", T.arr, [T.str, tokens]],
      ["tokenizer.ggml.token_type", T.arr, [T.i32, types]],
      ["tokenizer.ggml.merges", T.arr, [T.str, merge_pairs(tok.model).map((p) => p.join(" "))]],
      ["tokenizer.ggml.eos_token_id", T.u32, id_of("<|im_end|>")],
      ["tokenizer.ggml.padding_token_id", T.u32, id_of("<|endoftext|>")],
      ["tokenizer.ggml.add_bos_token", T.bool, false]);
    desc = { model: "gpt2", pre: "qwen2" };
  }
  write_gguf(gguf_path, kv);
  return { ...desc, n_tokens: tokens.length };
}

// Added to llama.cpp's llama-spm texts: mixed scripts, emoji, digits, whitespace runs, code,
// newlines, contractions, Unicode normalization. No special-token text ("<s>", "<|im_end|>"):
// llama_tokenize runs with parse_special = false, where Hugging Face (and thaw) always match
// special added tokens, so such texts would test the flag, not the tokenizer.
export const extra_texts = [
  "a",
  "\n",
  "Hello, 世界! Привет, мир. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया. こんにちは世界。안녕하세요.",
  "ภาษาไทยไม่มีช่องว่าง Ελληνικά: αβγ ΑΒΓ Ǆ ǅ ǆ Türkçe İstanbul ıi straße",
  "👍🏽 👨‍👩‍👧‍👦 🇫🇷🇩🇪 🏳️‍🌈 😀😃😄 🦙🦙🦙",
  "3 33 333 3333 33333 333333 3333333 3.14159 1,000,000 0x1F 1e-10 ١٢٣ ４５６ ²³ Ⅻ",
  "abc123def v1.2.3-rc4 2026-11-23T17:35:00Z",
  "a  b   c    d     e      f",
  "          ten spaces before",
  "trailing spaces   ",
  "\t\t\ttabs\t and\t \ta mix",
  "  \n  \n",
  "\r\n\r\nwindows\r\nlines\r\n",
  "line1\nline2\n\nline4\n\n\n\nline8",
  "no\u00a0break\u3000ideographic\u2028line separator\u0085next line",
  "tab\there\u000bvt\u000cff",
  "def f(x):\n    return x**2  # square\n",
  "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
  "fn main() -> Result<(), Box<dyn Error>> {\n        println!(\"{:?}\", 42);\n}",
  "<div class=\"x\">&amp;</div>  SELECT * FROM t WHERE id = 'abc';",
  "https://example.com/path?q=1&r=2#frag user@example.org",
  "I'm, you're, he'll, they'd, it's, we've, DON'T, Can'T, 'S 'Re 'LL",
  "café cafe\u0301 Å \u212B \uFB01 \u1112\u1161\u11AB 한 a\u0308\u0301",
  "x▁y ▁ ▁▁",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \uE000 \u{10FFFD} ꙮ",
  "pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
  "<think>\nreasoning\n</think>\n\nanswer",
  "a" + " ".repeat(17) + "b" + "\n".repeat(5) + "c" + "\t".repeat(3),
  "------======= ''''''```````\"\"\"\"......!!!!!!??????",
];

// Seeded random texts (mulberry32, as generate.mjs): 1 to 60 pieces, each a code point from one
// of the ranges below or a short chunk (contractions, whitespace runs, CRLF). Only texts that NFC
// leaves unchanged are kept: Qwen's normalizer is NFC and llama.cpp applies none, so a
// non-NFC text would show that known difference again instead of testing the tokenizer.
export function random_texts(seed, n) {
  const next = mulberry32(seed);
  const pick = (k) => Math.floor(next() * k);
  const ranges = [
    [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0x30, 0x39], [0x61, 0x7a], [0x61, 0x7a],
    [0xc0, 0xff], [0x391, 0x3c9], [0x410, 0x44f], [0x5d0, 0x5ea], [0x627, 0x64a], [0x660, 0x669],
    [0x905, 0x939], [0xe01, 0xe2e], [0x3041, 0x3096], [0x30a1, 0x30fa], [0x4e00, 0x9fa5],
    [0xac00, 0xd7a3], [0xff10, 0xff19], [0xff21, 0xff3a], [0x2000, 0x206f], [0x1f300, 0x1f64f],
    [0x1f900, 0x1f9ff], [0x1f3fb, 0x1f3ff], [0x200d, 0x200d], [0xfe0f, 0xfe0f], [0x1d400, 0x1d433],
  ];
  const chunks = [" ", " ", "  ", "    ", "\n", "\n\n", "\t", "\r\n", " \n", "\u00a0", "\u3000",
    "'s", "'T", "'re", "'VE", "'m", "'ll", "'D", "▁"];
  const out = [];
  while (out.length < n) {
    let t = "";
    for (let k = 1 + pick(60); k > 0; --k) {
      if (pick(4) === 0) { t += chunks[pick(chunks.length)]; continue; }
      const [lo, hi] = ranges[pick(ranges.length)];
      t += String.fromCodePoint(lo + pick(hi - lo + 1));
    }
    if (t.normalize("NFC") === t) out.push(t);
  }
  return out;
}

// ---- the fixture run ---------------------------------------------------------------------------

const vocabs = {
  "llama2-shared": { tokenizer: "llama2/tokenizer.json" },
  qwen3: { tokenizer: "qwen3/tokenizer.json" },
};

function parse_args(argv) {
  const a = { shared: "/work/shared/tokenizers", scores: "merges", seed: 1, random: 200, "llama-version": "" };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith("--") || i + 1 >= argv.length) throw new Error(`bad argument '${k}'`);
    a[k.slice(2)] = argv[i + 1];
  }
  for (const k of ["vocab", "llama-tokenize", "out"]) if (!a[k]) throw new Error(`missing --${k}`);
  if (!vocabs[a.vocab]) throw new Error(`--vocab ${a.vocab}: expected ${Object.keys(vocabs).join(" or ")}`);
  return a;
}

function main() {
  const a = parse_args(process.argv.slice(2));
  const rel = vocabs[a.vocab].tokenizer;
  const tokenizer_json = path.join(a.shared, rel);
  const spm_inp = path.join(a.shared, "vectors", "llama-spm.inp");
  const spm_texts = split_inp(fs.readFileSync(spm_inp, "utf8"));
  const random = random_texts(Number(a.seed), Number(a.random));
  const texts = [...spm_texts, ...extra_texts, ...random];
  for (const t of texts) if (t.includes(SEP)) throw new Error(`text contains the separator: ${JSON.stringify(t)}`);
  const sources = [...spm_texts.map((_, i) => `llama-spm.inp:${i}`), ...extra_texts.map((_, i) => `extra:${i}`),
    ...random.map((_, i) => `random:${a.seed}:${i}`)];

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "thaw-tokvec-"));
  try {
    const gguf = a.gguf ?? path.join(tmp, "vocab.gguf");
    const desc = vocab_gguf(tokenizer_json, gguf, { scores: a.scores });
    const inp = path.join(tmp, "texts.inp");
    fs.writeFileSync(inp, join_inp(texts));
    if (JSON.stringify(split_inp(fs.readFileSync(inp, "utf8"))) !== JSON.stringify(texts))
      throw new Error("texts do not survive the .inp round trip");
    const run = spawnSync(a["llama-tokenize"], [gguf, inp], { encoding: "utf8", maxBuffer: 1 << 26 });
    process.stderr.write(run.stderr ?? "");
    if (run.status !== 0) throw new Error(`llama_tokenize failed (${run.error ?? "exit " + run.status})`);
    const lines = run.stdout.split("\n");
    if (lines.pop() !== "" || lines.length !== texts.length)
      throw new Error(`expected ${texts.length} lines from llama_tokenize, got ${lines.length}`);
    const sha = crypto.createHash("sha256").update(fs.readFileSync(tokenizer_json)).digest("hex");
    const fixture = {
      vocab: a.vocab,
      tokenizer: rel,
      tokenizer_sha256: sha,
      generator: "tools/golden/tokenizer_gguf.mjs",
      reference: `llama.cpp via node-llama-cpp@3.22.1 prebuilt @node-llama-cpp/linux-x64 ${a["llama-version"]}`.trim(),
      call: "llama_tokenize(add_special = false, parse_special = false)",
      gguf: desc,
      cases: texts.map((text, i) => ({
        source: sources[i],
        text,
        ids: lines[i] === "" ? [] : lines[i].split(" ").map(Number),
      })),
    };
    fs.mkdirSync(path.dirname(a.out), { recursive: true });
    // One case per line group, the ids on one line.
    const text = JSON.stringify(fixture, null, 1).replace(/"ids": \[[^\]]*\]/g,
      (m) => `"ids": [${JSON.parse(m.slice(7)).join(", ")}]`);
    fs.writeFileSync(a.out, text + "\n");
    console.log(`wrote ${a.out}: ${texts.length} texts (${spm_texts.length} from llama-spm.inp, ${random.length} random)`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  try { main(); } catch (e) { console.error(`tokenizer_gguf.mjs: ${e.message}`); process.exit(1); }
}
