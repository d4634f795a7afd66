#!/usr/bin/env node
// Golden logits from llama.cpp for a thaw make-model preset (see README.md). Not run in CI.
//
//   node tools/golden/generate.mjs --thaw build/apps/thaw --llama-logits /path/llama_logits \
//        --backend-dir /path/bins/linux-x64 --preset tiny [--seed 1] [--tokens 12] \
//        [--llama-version TEXT] --out tests/fixtures/golden/tiny.json
//
// 1. `thaw make-model --preset P --seed S --dtype fp32` writes a Hugging Face directory.
// 2. to_gguf() converts it to GGUF v3 (arch "llama" or "qwen2") with the writer in gguf.mjs.
// 3. llama_logits (llama_logits.c, linked against the prebuilt llama.cpp) evaluates a fixed token
//    sequence and writes the logits of every position.
// 4. The fixture keeps, per position, the top 16 (id, logit) pairs and the logits of 8 fixed ids.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { ALIGN, T, write_gguf } from "./gguf.mjs";
import { mulberry32 } from "./mulberry32.mjs";

const repo_root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");

function parse_args(argv) {
  const a = { seed: 1, tokens: 12, "llama-version": "" };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith("--") || i + 1 >= argv.length) throw new Error(`bad argument '${k}'`);
    a[k.slice(2)] = argv[i + 1];
  }
  for (const k of ["thaw", "llama-logits", "backend-dir", "preset", "out"])
    if (!a[k]) throw new Error(`missing --${k}`);
  a.seed = Number(a.seed);
  a.tokens = Number(a.tokens);
  return a;
}

// ---- safetensors -------------------------------------------------------------------------------

function read_safetensors(dir) {
  const file = path.join(dir, "model.safetensors");
  if (!fs.existsSync(file)) throw new Error(`${file}: only single-file models are supported`);
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const base = 8 + n;
  const tensors = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (t.dtype !== "F32") throw new Error(`${name}: dtype ${t.dtype}, expected F32 (make the model with --dtype fp32)`);
    const [b, e] = t.data_offsets;
    const bytes = buf.subarray(base + b, base + e);
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    tensors.set(name, { shape: t.shape, data });
  }
  return tensors;
}

// Rows of q_proj / k_proj from HF's rotate-half order to llama.cpp's interleaved (GPT-J) order:
// within each head, row (t * hd/2 + j) moves to (2 j + t).
function permute_rows(data, shape, n_head) {
  const [rows, cols] = shape;
  const hd = rows / n_head;
  if (!Number.isInteger(hd) || hd % 2) throw new Error(`cannot permute ${rows} rows into ${n_head} heads`);
  const out = new Float32Array(data.length);
  for (let h = 0; h < n_head; ++h)
    for (let t = 0; t < 2; ++t)
      for (let j = 0; j < hd / 2; ++j) {
        const src = (h * hd + t * (hd / 2) + j) * cols;
        const dst = (h * hd + 2 * j + t) * cols;
        out.set(data.subarray(src, src + cols), dst);
      }
  return out;
}

function tokenizer_arrays(tok_json, vocab_size) {
  const tokens = new Array(vocab_size).fill(null);
  const types = new Array(vocab_size).fill(1); // normal
  for (const [piece, id] of Object.entries(tok_json.model.vocab)) {
    tokens[id] = piece;
    if (/^<0x[0-9A-F]{2}>$/.test(piece)) types[id] = 6; // byte
  }
  for (const t of tok_json.added_tokens ?? []) {
    tokens[t.id] = t.content;
    types[t.id] = t.special ? 3 : 4; // control / user defined
  }
  if (tok_json.model.unk_token !== undefined) {
    const unk = tok_json.model.vocab[tok_json.model.unk_token];
    if (unk !== undefined) types[unk] = 2;
  }
  for (let i = 0; i < vocab_size; ++i)
    if (tokens[i] === null) { tokens[i] = `[PAD${i}]`; types[i] = 5; } // unused
  // Scores only matter for tokenizing text, which the golden run does not do.
  const scores = tokens.map((_, i) => -i);
  return { tokens, scores, types };
}

export function to_gguf(hf_dir, gguf_path) {
  const cfg = JSON.parse(fs.readFileSync(path.join(hf_dir, "config.json"), "utf8"));
  // llama: interleaved RoPE in llama.cpp, so q/k rows are permuted. qwen2: NeoX (rotate-half)
  // RoPE as in HF, so no permutation, and q/k/v biases.
  const arch = cfg.model_type;
  if (arch !== "llama" && arch !== "qwen2") throw new Error(`model_type '${arch}': only llama and qwen2 are converted`);
  if (cfg.rope_scaling) throw new Error("rope_scaling is not converted");
  const st = read_safetensors(hf_dir);
  const tok = JSON.parse(fs.readFileSync(path.join(hf_dir, "tokenizer.json"), "utf8"));
  const n_head = cfg.num_attention_heads;
  const n_kv = cfg.num_key_value_heads ?? n_head;
  const head_dim = cfg.head_dim ?? cfg.hidden_size / n_head;

  const out = []; // [gguf name, hf shape, data]
  const add = (gguf, hf, f) => {
    const t = st.get(hf);
    if (!t) throw new Error(`${hf_dir}: tensor ${hf} missing`);
    out.push([gguf, t.shape, f ? f(t.data, t.shape) : t.data]);
  };
  add("token_embd.weight", "model.embed_tokens.weight");
  for (let l = 0; l < cfg.num_hidden_layers; ++l) {
    const p = `model.layers.${l}.`, b = `blk.${l}.`;
    add(b + "attn_norm.weight", p + "input_layernorm.weight");
    const perm = (n) => (arch === "llama" ? (d, s) => permute_rows(d, s, n) : undefined);
    add(b + "attn_q.weight", p + "self_attn.q_proj.weight", perm(n_head));
    add(b + "attn_k.weight", p + "self_attn.k_proj.weight", perm(n_kv));
    add(b + "attn_v.weight", p + "self_attn.v_proj.weight");
    if (cfg.attention_bias || arch === "qwen2") {
      if (arch === "llama") throw new Error("llama with attention_bias is not converted");
      add(b + "attn_q.bias", p + "self_attn.q_proj.bias");
      add(b + "attn_k.bias", p + "self_attn.k_proj.bias");
      add(b + "attn_v.bias", p + "self_attn.v_proj.bias");
    }
    add(b + "attn_output.weight", p + "self_attn.o_proj.weight");
    add(b + "ffn_norm.weight", p + "post_attention_layernorm.weight");
    add(b + "ffn_gate.weight", p + "mlp.gate_proj.weight");
    add(b + "ffn_up.weight", p + "mlp.up_proj.weight");
    add(b + "ffn_down.weight", p + "mlp.down_proj.weight");
  }
  add("output_norm.weight", "model.norm.weight");
  if (!cfg.tie_word_embeddings) add("output.weight", "lm_head.weight");

  const { tokens, scores, types } = tokenizer_arrays(tok, cfg.vocab_size);
  const kv = [
    ["general.architecture", T.str, arch],
    ["general.name", T.str, path.basename(hf_dir)],
    ["general.alignment", T.u32, ALIGN],
    [`${arch}.context_length`, T.u32, cfg.max_position_embeddings],
    [`${arch}.embedding_length`, T.u32, cfg.hidden_size],
    [`${arch}.block_count`, T.u32, cfg.num_hidden_layers],
    [`${arch}.feed_forward_length`, T.u32, cfg.intermediate_size],
    [`${arch}.attention.head_count`, T.u32, n_head],
    [`${arch}.attention.head_count_kv`, T.u32, n_kv],
    [`${arch}.attention.key_length`, T.u32, head_dim],
    [`${arch}.attention.value_length`, T.u32, head_dim],
    [`${arch}.rope.freq_base`, T.f32, cfg.rope_theta],
    [`${arch}.attention.layer_norm_rms_epsilon`, T.f32, cfg.rms_norm_eps],
    [`${arch}.rope.dimension_count`, T.u32, head_dim],
    [`${arch}.vocab_size`, T.u32, cfg.vocab_size],
    ["tokenizer.ggml.model", T.str, "llama"],
    ["tokenizer.ggml.tokens", T.arr, [T.str, tokens]],
    ["tokenizer.ggml.scores", T.arr, [T.f32, scores]],
    ["tokenizer.ggml.token_type", T.arr, [T.i32, types]],
    ["tokenizer.ggml.bos_token_id", T.u32, cfg.bos_token_id],
    ["tokenizer.ggml.eos_token_id", T.u32, Array.isArray(cfg.eos_token_id) ? cfg.eos_token_id[0] : cfg.eos_token_id],
    ["tokenizer.ggml.unknown_token_id", T.u32, 0],
  ];

  write_gguf(gguf_path, kv, out);
}

// ---- the golden run ----------------------------------------------------------------------------

// mulberry32: a fixed, documented generator so the test can state where its tokens come from.
function token_sequence(seed, n, vocab, bos) {
  const next = mulberry32(seed);
  const out = [bos];
  while (out.length < n) out.push(3 + Math.floor(next() * (vocab - 3)));
  return out;
}

const fixed_ids = (vocab) => [0, 1, 2, 13, 100, 1000, Math.floor(vocab / 2), vocab - 1];
const f32_text = (x) => Number(Math.fround(x).toPrecision(9));

function main() {
  const a = parse_args(process.argv.slice(2));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "thaw-golden-"));
  try {
    const hf = path.join(tmp, "hf");
    execFileSync(a.thaw, ["make-model", "--preset", a.preset, "--tokenizer",
      path.join(repo_root, "assets/tokenizers/llama2/tokenizer.json"), "--seed", String(a.seed),
      "--dtype", "fp32", hf], { stdio: "inherit" });
    const cfg = JSON.parse(fs.readFileSync(path.join(hf, "config.json"), "utf8"));
    const gguf = path.join(tmp, "model.gguf");
    to_gguf(hf, gguf);
    const V = cfg.vocab_size;
    const tokens = token_sequence(a.seed, a.tokens, V, cfg.bos_token_id);
    const bin = path.join(tmp, "logits.bin");
    const run = spawnSync(a["llama-logits"], [gguf, a["backend-dir"], bin, ...tokens.map(String)],
      { stdio: ["ignore", "inherit", "pipe"], encoding: "utf8" });
    const log = run.stderr ?? "";
    process.stderr.write(log);
    if (run.status !== 0) throw new Error(`llama_logits failed (${run.error ?? "exit " + run.status})`);
    const raw = fs.readFileSync(bin);
    const logits = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
    if (logits.length !== tokens.length * V) throw new Error(`expected ${tokens.length * V} logits, got ${logits.length}`);
    const ids = fixed_ids(V);
    const positions = [];
    for (let p = 0; p < tokens.length; ++p) {
      const row = logits.subarray(p * V, (p + 1) * V);
      const order = Array.from(row.keys()).sort((x, y) => row[y] - row[x] || x - y);
      positions.push({
        position: p,
        top: order.slice(0, 16).map((i) => [i, f32_text(row[i])]),
        fixed: ids.map((i) => [i, f32_text(row[i])]),
      });
    }
    const fixture = {
      preset: a.preset,
      seed: a.seed,
      dtype: "fp32",
      vocab_size: V,
      generator: "tools/golden/generate.mjs",
      reference: `llama.cpp via node-llama-cpp@3.22.1 prebuilt @node-llama-cpp/linux-x64 ${a["llama-version"]}`.trim(),
      reference_system_info: (log.match(/system_info (.*)/) ?? [, ""])[1].trim(),
      tokens,
      positions,
    };
    fs.mkdirSync(path.dirname(a.out), { recursive: true });
    // One [id, logit] pair per line, the token list on one line.
    const text = JSON.stringify(fixture, null, 1)
      .replace(/\[\s+(-?[0-9.e+-]+),\s+(-?[0-9.e+-]+)\s+\]/g, "[$1, $2]")
      .replace(/"tokens": \[[^\]]*\]/, `"tokens": [${tokens.join(", ")}]`);
    fs.writeFileSync(a.out, text + "\n");
    console.log(`wrote ${a.out}: ${tokens.length} positions, argmax at last ${positions.at(-1).top[0][0]}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  try { main(); } catch (e) { console.error(`generate.mjs: ${e.message}`); process.exit(1); }
}
