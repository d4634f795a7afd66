#include "runtime/checkpoint/make_model.hpp"

#include "runtime/checkpoint/safetensors.hpp"
#include "runtime/common/posix.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <system_error>
#include <thread>

namespace thaw {

namespace {

using json = nlohmann::json;

// ---- tokenizer ------------------------------------------------------------------------------

/// Looks a token's text up among added_tokens, then (unless `added_only`) in model.vocab (an
/// object for BPE and WordPiece, a list of [piece, score] for Unigram, where the id is the
/// position).
std::int64_t find_token(const json& tok, std::string_view content, bool added_only = false) {
  if (auto it = tok.find("added_tokens"); it != tok.end() && it->is_array())
    for (const auto& t : *it)
      if (t.is_object() && t.value("content", "") == content && t.contains("id") &&
          t.at("id").is_number_integer())
        return t.at("id").get<std::int64_t>();
  if (added_only)
    return -1;
  const auto& vocab = tok.at("model").at("vocab");
  if (vocab.is_object()) {
    auto it = vocab.find(std::string{content});
    if (it != vocab.end() && it->is_number_integer())
      return it->get<std::int64_t>();
  } else if (vocab.is_array()) {
    for (std::size_t i = 0; i < vocab.size(); ++i)
      if (vocab[i].is_array() && !vocab[i].empty() && vocab[i][0].is_string() &&
          vocab[i][0].get_ref<const std::string&>() == content)
        return static_cast<std::int64_t>(i);
  }
  return -1;
}

/// tokenizer_config.json states special tokens as "<s>" or {"content": "<s>", ...}.
std::string special_token_text(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end())
    return {};
  if (it->is_string())
    return it->get<std::string>();
  if (it->is_object() && it->contains("content") && it->at("content").is_string())
    return it->at("content").get<std::string>();
  return {};
}

std::int64_t pick_token(const json& tok, const json& tok_cfg, const char* key,
                        std::initializer_list<std::string_view> well_known) {
  if (auto text = special_token_text(tok_cfg, key); !text.empty())
    if (auto id = find_token(tok, text); id >= 0)
      return id;
  // Special tokens first: a byte-level BPE vocabulary may hold "<s>" as ordinary text (Qwen's
  // does), which must not win over its real <|endoftext|>.
  for (bool added_only : {true, false})
    for (auto text : well_known)
      if (auto id = find_token(tok, text, added_only); id >= 0)
        return id;
  return -1;
}

expected<json> read_json_file(const std::filesystem::path& path) {
  THAW_ASSIGN(auto text, read_text_file(path));
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    return make_error(errc::parse_error, path.string() + ": invalid JSON: " + e.what());
  }
}

// ---- presets --------------------------------------------------------------------------------

struct preset {
  std::string_view name;
  model_config cfg;
};

model_config shape(architecture arch, std::uint64_t hidden, std::uint64_t layers,
                   std::uint64_t heads, std::uint64_t kv_heads, std::uint64_t inter,
                   std::uint64_t max_pos, bool tied) {
  model_config c;
  c.arch = arch;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.intermediate_size = inter;
  c.max_position_embeddings = max_pos;
  c.tie_word_embeddings = tied;
  c.attention_bias = arch == architecture::qwen2;
  return c;
}

std::vector<preset> presets() {
  using enum architecture;
  std::vector<preset> out;
  out.push_back({"tiny", shape(llama, 16, 2, 2, 1, 48, 256, true)});
  auto q = shape(qwen2, 16, 2, 2, 1, 48, 256, true);
  q.rope_theta = 1e6;
  out.push_back({"tiny-qwen2", q});
  auto m = shape(mistral, 16, 2, 2, 1, 48, 256, false);
  m.sliding_window = 64;
  out.push_back({"tiny-mistral", m});
  // llama2.c's TinyStories models share the classifier with the embedding.
  out.push_back({"stories15m", shape(llama, 288, 6, 6, 6, 768, 256, true)});
  out.push_back({"stories110m", shape(llama, 768, 12, 12, 12, 2048, 1024, true)});
  auto qw = shape(qwen2, 896, 24, 14, 2, 4864, 32768, true);
  qw.rope_theta = 1e6;
  qw.rms_norm_eps = 1e-6;
  out.push_back({"qwen2.5-0.5b", qw});
  auto l1 = shape(llama, 2048, 16, 32, 8, 8192, 131072, true);
  l1.rope_theta = 500000.0;
  l1.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
  out.push_back({"llama-3.2-1b", l1});
  auto l8 = shape(llama, 4096, 32, 32, 8, 14336, 8192, false);
  l8.rope_theta = 500000.0;
  out.push_back({"llama-3-8b", l8});
  return out;
}

// ---- weights --------------------------------------------------------------------------------

constexpr std::uint64_t golden_gamma = 0x9e3779b97f4a7c15ULL;

constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += golden_gamma;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr std::uint64_t fnv1a64(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// Fills elements [first, first + out.size()) of a tensor on the calling thread, converting
/// each block to `type` into `dst` (out.size() * dtype_size(type) bytes).
void fill_range(std::uint64_t seed, std::string_view name, dtype type, std::uint64_t first,
                std::uint64_t count, std::byte* dst) {
  constexpr std::uint64_t block = 16384;
  std::vector<float> buf(static_cast<std::size_t>(std::min(block, count)));
  for (std::uint64_t done = 0; done < count; done += block) {
    const auto n = static_cast<std::size_t>(std::min(block, count - done));
    generate_weights(seed, name, first + done, std::span<float>{buf.data(), n});
    convert_elements(dtype::f32, buf.data(), type, dst + done * dtype_size(type), n);
  }
}

/// Generates one whole tensor with `threads` threads. Each element depends only on its index,
/// so the split does not change a byte.
void fill_tensor(std::uint64_t seed, std::string_view name, dtype type, std::span<std::byte> out,
                 unsigned threads) {
  const std::uint64_t count = out.size() / dtype_size(type);
  constexpr std::uint64_t min_per_thread = 1 << 16;
  const auto n_threads = static_cast<unsigned>(
      std::clamp<std::uint64_t>(count / min_per_thread, 1, std::max(threads, 1U)));
  auto part = [&](unsigned t) {
    const std::uint64_t begin = count * t / n_threads;
    const std::uint64_t end = count * (t + 1) / n_threads;
    fill_range(seed, name, type, begin, end - begin, out.data() + begin * dtype_size(type));
  };
  std::vector<std::thread> workers;
  for (unsigned t = 1; t < n_threads; ++t) {
    try {
      workers.emplace_back(part, t);
    } catch (const std::system_error&) {
      part(t); // no thread to be had: do that share here
    }
  }
  part(0);
  for (auto& w : workers)
    w.join();
}

/// transformers' shard names: model-00001-of-00003.safetensors.
std::string shard_name(std::size_t index, std::size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

json token_id_json(const std::vector<std::int64_t>& ids) {
  if (ids.empty())
    return nullptr;
  if (ids.size() == 1)
    return ids[0];
  return ids;
}

status copy_file_durably(const std::filesystem::path& from, const std::filesystem::path& to) {
  THAW_ASSIGN(auto text, read_text_file(from));
  return write_text_file(to, text);
}

/// Writes everything into `dir` (the temporary directory).
status write_model_files(const std::filesystem::path& dir, const model_config& cfg,
                         const make_model_options& options) {
  THAW_TRY(write_text_file(dir / "config.json", to_hf_config_json(cfg)));
  json gen;
  gen["bos_token_id"] = cfg.bos_token_id >= 0 ? json(cfg.bos_token_id) : json(nullptr);
  gen["eos_token_id"] = token_id_json(cfg.eos_token_ids);
  THAW_TRY(write_text_file(dir / "generation_config.json", gen.dump(2) + "\n"));
  THAW_TRY(copy_file_durably(options.tokenizer_json, dir / "tokenizer.json"));
  auto tok_cfg = options.tokenizer_json.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(tok_cfg))
    THAW_TRY(copy_file_durably(tok_cfg, dir / "tokenizer_config.json"));

  // Shards as transformers cuts them: start a new one when the next tensor would overflow it;
  // a tensor larger than the limit sits alone. Tensors stay in load order across shards.
  const auto specs = expected_tensors(cfg);
  std::vector<safetensors_entry> entries;
  std::uint64_t total = 0;
  for (const auto& s : specs) {
    entries.push_back({s.name, cfg.torch_dtype, s.shape});
    total += entries.back().bytes();
  }
  std::vector<std::vector<std::size_t>> shards(1);
  std::uint64_t shard_bytes = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto n = entries[i].bytes();
    if (!shards.back().empty() && shard_bytes + n > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += n;
  }

  const unsigned threads =
      options.threads != 0 ? options.threads : std::max(1U, std::thread::hardware_concurrency());
  std::uint64_t done = 0;
  json weight_map = json::object();
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  for (std::size_t s = 0; s < shards.size(); ++s) {
    const auto name = shards.size() == 1 ? std::string{"model.safetensors"}
                                         : shard_name(s, shards.size());
    std::vector<safetensors_entry> shard_entries;
    for (auto i : shards[s]) {
      shard_entries.push_back(entries[i]);
      weight_map[entries[i].name] = name;
    }
    auto fill = [&](std::size_t i, std::span<std::byte> out) -> status {
      // Called once the previous tensor is on disk.
      if (options.cancel != nullptr && options.cancel->load())
        return make_error(errc::cancelled, "cancelled");
      if (options.on_progress)
        options.on_progress(done, total);
      fill_tensor(options.seed, shard_entries[i].name, cfg.torch_dtype, out, threads);
      done += out.size();
      return {};
    };
    THAW_TRY(write_safetensors(dir / name, shard_entries, fill, metadata));
  }
  if (options.on_progress)
    options.on_progress(total, total);

  if (shards.size() > 1) {
    json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = std::move(weight_map);
    THAW_TRY(write_text_file(dir / "model.safetensors.index.json", index.dump(2) + "\n"));
  }
  return {};
}

} // namespace

void generate_weights(std::uint64_t seed, std::string_view tensor_name, std::uint64_t first,
                      std::span<float> out) {
  constexpr float stddev = 0.02f; // transformers' initializer_range
  // Norm weights near one (not exactly, so a wrong norm shows); everything else centred on zero.
  const float mean = tensor_name.ends_with("norm.weight") ? 1.0f : 0.0f;
  const std::uint64_t key = splitmix64(splitmix64(seed) ^ fnv1a64(tensor_name));
  // Box-Muller turns pair p's two uniforms (both from one 64-bit hash of p) into elements 2p
  // and 2p + 1. Single precision: twice as fast as double, and u1 >= 2^-32 only truncates the
  // tails beyond 6.7 sigma.
  std::uint64_t i = first;
  const std::uint64_t end = first + out.size();
  while (i < end) {
    const std::uint64_t pair = i / 2;
    const std::uint64_t r = splitmix64(key + pair * golden_gamma);
    const float u1 = static_cast<float>((r >> 32) + 1) * 0x1.0p-32f;          // (0, 1]
    const float u2 = static_cast<float>(r & 0xffffffffULL) * 0x1.0p-32f;      // [0, 1]
    const float radius = stddev * std::sqrt(-2.0f * std::log(u1));
    const float angle = 2.0f * std::numbers::pi_v<float> * u2;
    // Both computed unconditionally so that the compiler makes one sincosf call.
    const float c = std::cos(angle);
    const float s = std::sin(angle);
    if (i % 2 == 0) {
      out[i - first] = mean + radius * c;
      ++i;
    }
    if (i < end) {
      out[i - first] = mean + radius * s;
      ++i;
    }
  }
}

expected<tokenizer_info> read_tokenizer_info(const std::filesystem::path& tokenizer_json) {
  THAW_ASSIGN(auto tok, read_json_file(tokenizer_json));
  json tok_cfg = json::object();
  auto cfg_path = tokenizer_json.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(cfg_path)) {
    THAW_ASSIGN(tok_cfg, read_json_file(cfg_path));
  }
  auto bad = [&](const std::string& why) {
    return make_error(errc::parse_error, tokenizer_json.string() + ": " + why);
  };
  if (!tok.is_object() || !tok.contains("model") || !tok.at("model").is_object() ||
      !tok.at("model").contains("vocab"))
    return bad("field 'model.vocab': missing");
  tokenizer_info info;
  std::int64_t max_id = -1;
  const auto& vocab = tok.at("model").at("vocab");
  if (vocab.is_object()) {
    for (const auto& [text, id] : vocab.items()) {
      if (!id.is_number_integer())
        return bad("field 'model.vocab." + text + "': expected an integer id");
      max_id = std::max(max_id, id.get<std::int64_t>());
    }
  } else if (vocab.is_array()) {
    max_id = static_cast<std::int64_t>(vocab.size()) - 1;
  } else {
    return bad("field 'model.vocab': expected an object or a list");
  }
  if (auto it = tok.find("added_tokens"); it != tok.end() && it->is_array())
    for (const auto& t : *it) {
      if (!t.is_object() || !t.contains("id") || !t.at("id").is_number_integer())
        return bad("field 'added_tokens': entry without an integer id");
      max_id = std::max(max_id, t.at("id").get<std::int64_t>());
    }
  if (max_id < 0)
    return bad("the vocabulary is empty");
  info.vocab_size = static_cast<std::uint64_t>(max_id) + 1;
  if (!tok_cfg.is_object())
    tok_cfg = json::object();
  try {
    info.bos_token_id =
        pick_token(tok, tok_cfg, "bos_token", {"<s>", "<|begin_of_text|>", "<|endoftext|>"});
    info.eos_token_id = pick_token(tok, tok_cfg, "eos_token",
                                   {"</s>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>"});
  } catch (const json::exception& e) {
    return bad(std::string{"looking up BOS/EOS: "} + e.what());
  }
  return info;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (const auto& p : presets())
    out.emplace_back(p.name);
  return out;
}

expected<model_config> preset_config(std::string_view name, std::uint64_t vocab_size) {
  for (auto& p : presets()) {
    if (p.name != name)
      continue;
    p.cfg.vocab_size = vocab_size;
    THAW_TRY(p.cfg.validate());
    return p.cfg;
  }
  std::string known;
  for (const auto& n : preset_names())
    known += (known.empty() ? "" : ", ") + n;
  return make_error(errc::invalid_argument,
                    "unknown preset '" + std::string{name} + "' (presets: " + known + ")");
}

status make_model(const std::filesystem::path& out_dir, const make_model_options& options) {
  // Cheap checks first, so that a typo costs nothing.
  THAW_TRY(preset_config(options.preset, 1));
  if (options.max_shard_bytes == 0)
    return make_error(errc::invalid_argument, "max_shard_bytes must be positive");
  std::error_code ec;
  if (std::filesystem::exists(out_dir, ec))
    return make_error(errc::already_exists, out_dir.string() + ": already exists; not replaced");

  THAW_ASSIGN(auto tok, read_tokenizer_info(options.tokenizer_json));
  THAW_ASSIGN(auto cfg, preset_config(options.preset, tok.vocab_size));
  cfg.torch_dtype = options.type;
  cfg.bos_token_id = tok.bos_token_id;
  if (tok.eos_token_id >= 0)
    cfg.eos_token_ids = {tok.eos_token_id};

  if (auto parent = out_dir.parent_path(); !parent.empty()) {
    std::filesystem::create_directories(parent, ec);
    if (ec)
      return make_error(errc::io_error, parent.string() + ": cannot create: " + ec.message());
  }
  THAW_ASSIGN(auto temp, make_temp_dir(out_dir));
  auto ok = write_model_files(temp, cfg, options);
  if (ok)
    ok = publish_dir(temp, out_dir);
  if (!ok) {
    remove_tree_quietly(temp);
    return with_context(std::move(ok).err(), "make-model " + options.preset);
  }
  return {};
}

} // namespace thaw
