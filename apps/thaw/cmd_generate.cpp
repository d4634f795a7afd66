// thaw generate CKPT --prompt TEXT: one completion through the engine's step loop on the host
// runner (or, with --device cuda, the CUDA runner), streamed as it is sampled (or printed at the
// end), with timings.

#include "apps/thaw/commands.hpp"

#include "runtime/common/log.hpp"
#include "runtime/engine/chat_template.hpp"
#include "runtime/engine/engine.hpp"
#include "runtime/engine/host_model_runner.hpp"
#include "runtime/engine/tokenizer.hpp"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace thaw::app {
namespace {

struct generate_args {
  common_options common;
  std::string checkpoint;
  std::string prompt;
  bool chat = false;
  std::string system;
  generation_request request;
  bool stream = false;
  bool json = false;
  int threads = 2;
  std::int32_t kv_blocks = 256;
  std::string device = "host";
};

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

expected<int> generate(generate_args& a) {
  if (a.prompt.empty())
    return make_error(errc::invalid_argument, "prompt: empty (give some text)");
  const std::filesystem::path dir = a.checkpoint;
  THAW_ASSIGN(auto tok, tokenizer::load(dir / "tokenizer.json"));
  std::string text = a.prompt;
  if (a.chat) {
    THAW_ASSIGN(auto tmpl, chat_template::from_tokenizer(tok));
    std::vector<chat_message> messages;
    if (!a.system.empty())
      messages.push_back({"system", a.system});
    messages.push_back({"user", a.prompt});
    THAW_ASSIGN(text, tmpl.apply(messages));
  }
  // A chat template writes BOS itself where the family wants it.
  THAW_ASSIGN(a.request.prompt, tok.encode(text, /*add_special=*/!a.chat));

  host_runner_options ro;
  ro.threads = a.threads;
  ro.num_kv_blocks = a.kv_blocks;
  THAW_ASSIGN(auto model, load_model_on(a.device, dir, ro));
  engine e(*model.runner, &tok);

  const auto prompt_tokens = a.request.prompt.size();
  const auto start = clock_type::now();
  THAW_ASSIGN(auto id, e.add(a.request));
  std::string out;
  std::vector<std::int32_t> tokens;
  double first_token = 0;
  sequence_event last;
  while (e.has_work()) {
    for (auto& ev : e.step()) {
      if (ev.id != id)
        continue;
      if (ev.failure)
        return *ev.failure;
      if (tokens.empty())
        first_token = seconds_since(start);
      if (ev.token >= 0)
        tokens.push_back(ev.token);
      out += ev.text;
      if (a.stream && a.json) {
        nlohmann::json line{{"token", ev.token}, {"text", ev.text}};
        if (ev.finish != finish_reason::none)
          line["finish_reason"] = std::string{to_string(ev.finish)};
        std::printf("%s\n", line.dump().c_str());
        std::fflush(stdout);
      } else if (a.stream && !ev.text.empty()) {
        std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
        std::fflush(stdout);
      }
      last = std::move(ev);
    }
  }
  const double total = seconds_since(start);
  const double decode_tps =
      tokens.size() > 1 ? static_cast<double>(tokens.size() - 1) / (total - first_token) : 0.0;
  if (a.json) {
    nlohmann::json r{{"text", out},
                     {"tokens", tokens},
                     {"finish_reason", std::string{to_string(last.finish)}},
                     {"prompt_tokens", prompt_tokens},
                     {"completion_tokens", tokens.size()},
                     {"time_to_first_token_s", first_token},
                     {"decode_tokens_per_s", decode_tps},
                     {"device", model.dev->name()}};
    if (!last.stop_reason.empty())
      r["stop"] = last.stop_reason;
    std::printf("%s\n", r.dump(a.stream ? -1 : 2).c_str());
  } else {
    if (!a.stream)
      std::fwrite(out.data(), 1, out.size(), stdout);
    std::printf("\n");
    spdlog::info("generate: {} prompt tokens, {} generated ({}), first token {:.3f} s, decode {:.1f} tok/s",
             prompt_tokens, tokens.size(), to_string(last.finish), first_token, decode_tps);
  }
  return 0;
}

int run_generate(generate_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("generate", s.err());
  auto r = generate(a);
  if (!r)
    return report_error("generate", r.err());
  return *r;
}

} // namespace

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<generate_args>();
  auto* cmd = app.add_subcommand("generate", "Generate a completion on the CPU engine");
  cmd->add_option("CKPT", a->checkpoint, "Checkpoint directory (with tokenizer.json)")->required();
  cmd->add_option("--prompt", a->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", a->chat, "Wrap the prompt in the model's chat template as a user message");
  cmd->add_option("--system", a->system, "System message (with --chat)");
  cmd->add_option("--max-tokens", a->request.max_tokens, "Tokens to generate at most")
      ->capture_default_str();
  cmd->add_option("--temperature", a->request.sampling.temperature, "0: greedy")
      ->capture_default_str();
  cmd->add_option("--top-p", a->request.sampling.top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--top-k", a->request.sampling.top_k, "Keep the k most likely (0: off)")
      ->capture_default_str();
  cmd->add_option("--seed", a->request.sampling.seed, "Random stream of this request")
      ->capture_default_str();
  cmd->add_option("--stop", a->request.stop, "Stop string (repeatable)");
  cmd->add_flag("--ignore-eos", a->request.ignore_eos, "Keep generating after EOS");
  cmd->add_flag("--stream", a->stream, "Print text as it is generated");
  cmd->add_flag("--json", a->json, "Print JSON (with --stream: one line per token, then a summary)");
  cmd->add_option("--device", a->device, "host, or cuda (GPU 0)")
      ->check(CLI::IsMember({"host", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "Compute threads")->check(CLI::Range(1, 256))->capture_default_str();
  cmd->add_option("--kv-blocks", a->kv_blocks, "KV cache blocks of 16 tokens")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  add_common_options(*cmd, a->common);
  cmd->callback([a] { run_result = run_generate(*a); });
}

} // namespace thaw::app
