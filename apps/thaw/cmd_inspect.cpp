// thaw inspect CKPT: prints a checkpoint's manifest as a table, or as JSON.

#include "apps/thaw/commands.hpp"

#include "runtime/checkpoint/checkpoint.hpp"
#include "runtime/common/log.hpp"
#include "runtime/common/progress.hpp"
#include "runtime/common/units.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace thaw::app {
namespace {

struct inspect_args {
  common_options common;
  std::string dir;
  bool json = false;
  bool verify = false;
};

std::string shape_string(const std::vector<std::uint64_t>& shape) {
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i)
    s += (i ? " x " : "") + std::to_string(shape[i]);
  return s;
}

nlohmann::json to_json(const checkpoint& ck) {
  const auto& m = ck.info();
  const auto& c = m.config;
  nlohmann::json j;
  j["path"] = ck.dir().string();
  j["format_version"] = m.format_version;
  j["content_id"] = ck.content_id();
  j["total_bytes"] = m.total_bytes;
  j["source"] = m.source;
  j["config"] = {{"architecture", to_string(c.arch)},
                 {"vocab_size", c.vocab_size},
                 {"hidden_size", c.hidden_size},
                 {"intermediate_size", c.intermediate_size},
                 {"num_layers", c.num_layers},
                 {"num_heads", c.num_heads},
                 {"num_kv_heads", c.num_kv_heads},
                 {"head_dim", c.head_dim},
                 {"max_position_embeddings", c.max_position_embeddings},
                 {"rope_theta", c.rope_theta},
                 {"rms_norm_eps", c.rms_norm_eps},
                 {"tie_word_embeddings", c.tie_word_embeddings},
                 {"attention_bias", c.attention_bias},
                 {"sliding_window", c.sliding_window},
                 {"bos_token_id", c.bos_token_id},
                 {"eos_token_ids", c.eos_token_ids},
                 {"rope_scaling", c.rope_scaling.type},
                 {"dtype", to_string(c.torch_dtype)}};
  auto& files = j["files"] = nlohmann::json::array();
  for (const auto& f : m.files)
    files.push_back({{"name", f.name}, {"bytes", f.bytes}, {"chunk_bytes", f.chunk_bytes},
                     {"chunks", f.chunk_checksums.size()}});
  auto& tensors = j["tensors"] = nlohmann::json::array();
  for (const auto& t : m.tensors)
    tensors.push_back({{"name", t.name}, {"dtype", to_string(t.type)}, {"shape", t.shape},
                       {"file", t.file}, {"offset", t.offset}, {"bytes", t.bytes},
                       {"layer", t.layer}});
  return j;
}

void print_table(const checkpoint& ck) {
  const auto& m = ck.info();
  const auto& c = m.config;
  std::uint64_t params = 0;
  for (const auto& t : m.tensors)
    params += t.bytes / dtype_size(t.type);
  std::printf("checkpoint  %s\n", ck.dir().c_str());
  std::printf("format      version %u, content id %s\n", m.format_version, ck.content_id().c_str());
  std::printf("model       %s, %s, %.1fM parameters, %s\n", std::string{to_string(c.arch)}.c_str(),
              std::string{to_string(c.torch_dtype)}.c_str(), static_cast<double>(params) / 1e6,
              format_bytes(m.total_bytes).c_str());
  std::printf("shape       vocab %llu, hidden %llu, intermediate %llu, layers %llu, heads %llu/%llu kv, "
              "head_dim %llu\n",
              static_cast<unsigned long long>(c.vocab_size), static_cast<unsigned long long>(c.hidden_size),
              static_cast<unsigned long long>(c.intermediate_size), static_cast<unsigned long long>(c.num_layers),
              static_cast<unsigned long long>(c.num_heads), static_cast<unsigned long long>(c.num_kv_heads),
              static_cast<unsigned long long>(c.head_dim));
  std::printf("positions   max %llu, rope theta %g%s%s, rms eps %g, %s embeddings%s\n",
              static_cast<unsigned long long>(c.max_position_embeddings), c.rope_theta,
              c.rope_scaling.type.empty() ? "" : ", scaling ", c.rope_scaling.type.c_str(),
              c.rms_norm_eps, c.tie_word_embeddings ? "tied" : "separate",
              c.attention_bias ? ", qkv bias" : "");
  if (!m.source.empty())
    std::printf("source      %s\n", m.source.c_str());
  std::printf("\n%-16s %14s %12s %8s\n", "file", "bytes", "chunk", "chunks");
  for (const auto& f : m.files)
    std::printf("%-16s %14llu %12s %8zu\n", f.name.c_str(), static_cast<unsigned long long>(f.bytes),
                format_bytes(f.chunk_bytes).c_str(), f.chunk_checksums.size());
  std::printf("\n%-52s %-5s %-14s %5s %5s %12s %12s\n", "tensor", "dtype", "shape", "layer", "file",
              "offset", "bytes");
  for (const auto& t : m.tensors)
    std::printf("%-52s %-5s %-14s %5d %5u %12llu %12llu\n", t.name.c_str(),
                std::string{to_string(t.type)}.c_str(), shape_string(t.shape).c_str(), t.layer, t.file,
                static_cast<unsigned long long>(t.offset), static_cast<unsigned long long>(t.bytes));
}

int run_inspect(const inspect_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("inspect", s.err());
  auto ck = checkpoint::open(a.dir);
  if (!ck)
    return report_error("inspect", ck.err());
  if (a.json)
    std::printf("%s\n", to_json(*ck).dump(2).c_str());
  else
    print_table(*ck);
  if (a.verify) {
    progress_bar bar("verify", ck->total_bytes());
    auto s = ck->verify_data([&](std::uint64_t done, std::uint64_t) { bar.update(done); });
    bar.finish();
    if (!s)
      return report_error("inspect", s.err());
    std::fprintf(stderr, "verified %zu chunks: all checksums match\n", ck->chunks().size());
  }
  return 0;
}

} // namespace

void add_inspect_command(CLI::App& app) {
  auto args = std::make_shared<inspect_args>();
  auto* cmd = app.add_subcommand("inspect", "Print a checkpoint's manifest");
  cmd->add_option("CKPT", args->dir, "Checkpoint directory")->required();
  cmd->add_flag("--json", args->json, "Print JSON instead of a table");
  cmd->add_flag("--verify", args->verify, "Read all data and check every chunk checksum");
  add_common_options(*cmd, args->common);
  cmd->callback([args] { run_result = run_inspect(*args); });
}

} // namespace thaw::app
