#!/usr/bin/env node
// Same-machine peer benchmark: `thaw bench engine` against llama.cpp (llama_bench.c, linked
// against the prebuilt libraries of node-llama-cpp) on the same random weights. Not run in CI.
//
//   node tools/golden/peer_bench.mjs --llama-bench /path/llama_bench --backend-dir /path/bins/linux-x64 \
//        [--thaw build/apps/thaw] [--models-dir DIR] [--gguf-dir DIR] [--presets stories15m,stories110m] \
//        [--threads 1,2] [--rounds 3] [--prompt-len 64] [--gen 64] [--repeats 3] [--json OUT]
//
// For each preset P: DIR/P-hf is made with `thaw make-model --preset P --seed 1 --dtype fp32` and
// DIR/P-ck with `thaw convert` unless they exist; DIR/P-hf is converted to GGUF f32 with
// to_gguf() of generate.mjs (into --gguf-dir, reused while newer than the safetensors). Then,
// `--rounds` times, for every preset and thread count, thaw and llama.cpp run one after the other
// (so a busy moment of the machine hits both), each reporting the median of --repeats runs. The
// table gives the median over rounds and the spread (min..max over rounds), and the cores that
// other processes kept busy in the half second before each pair (from /proc/stat).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { to_gguf } from "./generate.mjs";

const repo_root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");

function parse_args(argv) {
  const a = {
    thaw: path.join(repo_root, "build/apps/thaw"),
    "models-dir": path.join(os.tmpdir(), "thaw-peer-models"),
    "gguf-dir": path.join(os.tmpdir(), "thaw-peer-gguf"),
    presets: "stories15m,stories110m",
    threads: "1,2",
    rounds: 3,
    "prompt-len": 64,
    gen: 64,
    repeats: 3,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith("--") || i + 1 >= argv.length) throw new Error(`bad argument '${k}'`);
    a[k.slice(2)] = argv[i + 1];
  }
  for (const k of ["llama-bench", "backend-dir"]) if (!a[k]) throw new Error(`missing --${k}`);
  a.presets = a.presets.split(",");
  a.threads = a.threads.split(",").map(Number);
  for (const k of ["rounds", "prompt-len", "gen", "repeats"]) a[k] = Number(a[k]);
  return a;
}

const quote = (s) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);
const show = (cmd, args) => [cmd, ...args].map(quote).join(" ");

function run_json(cmd, args) {
  const text = execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 26 });
  return JSON.parse(text.slice(text.indexOf("{")));
}

function prepare(a, preset) {
  const hf = path.join(a["models-dir"], `${preset}-hf`);
  const ck = path.join(a["models-dir"], `${preset}-ck`);
  if (!fs.existsSync(path.join(hf, "config.json"))) {
    const args = ["make-model", "--preset", preset, "--tokenizer",
      path.join(repo_root, "assets/tokenizers/llama2/tokenizer.json"), "--seed", "1", "--dtype", "fp32", hf];
    console.error(`$ ${show(a.thaw, args)}`);
    execFileSync(a.thaw, args, { stdio: "inherit" });
  }
  if (!fs.existsSync(path.join(ck, "config.json"))) {
    const args = ["convert", hf, ck];
    console.error(`$ ${show(a.thaw, args)}`);
    execFileSync(a.thaw, args, { stdio: "inherit" });
  }
  fs.mkdirSync(a["gguf-dir"], { recursive: true });
  const gguf = path.join(a["gguf-dir"], `${preset}-f32.gguf`);
  const st = path.join(hf, "model.safetensors");
  if (!fs.existsSync(gguf) || fs.statSync(gguf).mtimeMs < fs.statSync(st).mtimeMs) {
    console.error(`converting ${hf} -> ${gguf}`);
    to_gguf(hf, gguf);
  }
  return { hf, ck, gguf };
}

// Cores busy (out of os.cpus().length) over `ms` while this script only sleeps: the load that
// other processes put on the machine just before a pair of runs.
function background_busy(ms = 500) {
  const read = () => {
    const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + f[4]; // idle + iowait
    return { idle, total: f.reduce((x, y) => x + y, 0) };
  };
  const a = read();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const b = read();
  const total = b.total - a.total;
  return total > 0 ? (os.cpus().length * (total - (b.idle - a.idle))) / total : 0;
}

const median = (v) => {
  const s = [...v].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const spread = (v, digits) =>
  `${median(v).toFixed(digits)} (${Math.min(...v).toFixed(digits)}..${Math.max(...v).toFixed(digits)})`;

function main() {
  const a = parse_args(process.argv.slice(2));
  const models = Object.fromEntries(a.presets.map((p) => [p, prepare(a, p)]));
  const common = ["--prompt-len", String(a["prompt-len"]), "--gen", String(a.gen)];
  const results = {}; // key "preset/threads" -> {thaw: [...], llama: [...]}
  const commands = [];
  for (let round = 0; round < a.rounds; ++round)
    for (const p of a.presets)
      for (const t of a.threads) {
        const key = `${p}/${t}`;
        const r = (results[key] ??= { preset: p, threads: t, thaw: [], llama: [], background: [] });
        r.background.push(background_busy());
        const thaw_args = ["bench", "engine", models[p].ck, ...common, "--batch", "1", "--threads", String(t),
          "--repeats", String(a.repeats), "--json"];
        const llama_args = [models[p].gguf, a["backend-dir"], ...common, "--threads", String(t),
          "--repeats", String(a.repeats)];
        if (round === 0) commands.push(show(a.thaw, thaw_args), show(a["llama-bench"], llama_args));
        // Alternate which runs first, so neither always follows the other.
        const order = round % 2 ? ["llama", "thaw"] : ["thaw", "llama"];
        for (const who of order) {
          if (who === "thaw") {
            const j = run_json(a.thaw, thaw_args);
            const b = j.batches[0];
            r.thaw.push({ prefill: b.prefill_tokens_per_s, decode: b.decode_tokens_per_s, read_gbps: j.read_gbps,
              fraction: b.decode_fraction_of_bandwidth_limit });
          } else {
            const j = run_json(a["llama-bench"], llama_args);
            r.llama.push({ prefill: j.prefill_tok_s, decode: j.decode_tok_s, system_info: j.system_info });
          }
        }
        const th = r.thaw.at(-1), ll = r.llama.at(-1);
        console.error(`round ${round + 1} ${key}: thaw ${th.prefill.toFixed(0)}/${th.decode.toFixed(1)} ` +
          `llama.cpp ${ll.prefill.toFixed(0)}/${ll.decode.toFixed(1)} tok/s (prefill/decode), ` +
          `background ${r.background.at(-1).toFixed(2)} cores busy`);
      }

  console.log("Commands (each run once per round, interleaved, order alternating per round):");
  for (const c of commands) console.log(`  ${c}`);
  console.log(`\nPrefill P=${a["prompt-len"]}, decode G=${a.gen}, batch 1, f32; each figure: median over ` +
    `${a.rounds} rounds (min..max over rounds) of each tool's median of ${a.repeats} repeats.\n`);
  const head = ["model", "threads", "thaw prefill tok/s", "thaw decode tok/s", "llama.cpp prefill tok/s",
    "llama.cpp decode tok/s", "prefill thaw/llama", "decode thaw/llama", "thaw read_gbps",
    "thaw decode/bw limit", "background cores busy"];
  const rows = [];
  for (const r of Object.values(results)) {
    const pick = (arr, k) => arr.map((x) => x[k]);
    const ratio = (k) => r.thaw.map((x, i) => x[k] / r.llama[i][k]); // per round, same moment
    rows.push([r.preset, String(r.threads), spread(pick(r.thaw, "prefill"), 0), spread(pick(r.thaw, "decode"), 1),
      spread(pick(r.llama, "prefill"), 0), spread(pick(r.llama, "decode"), 1), spread(ratio("prefill"), 2),
      spread(ratio("decode"), 2), spread(pick(r.thaw, "read_gbps"), 1), spread(pick(r.thaw, "fraction"), 2),
      spread(r.background, 2)]);
  }
  console.log(`| ${head.join(" | ")} |`);
  console.log(`|${head.map(() => "---").join("|")}|`);
  for (const row of rows) console.log(`| ${row.join(" | ")} |`);
  const info = Object.values(results)[0]?.llama[0]?.system_info;
  if (info) console.log(`\nllama.cpp system_info: ${info.trim()}`);
  if (a.json) fs.writeFileSync(a.json, JSON.stringify({ args: a, commands, results }, null, 1) + "\n");
}

try { main(); } catch (e) { console.error(`peer_bench.mjs: ${e.message}`); process.exit(1); }
