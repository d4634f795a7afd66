// thaw tokenize (CKPT_DIR|TOKENIZER_JSON) (--text TEXT|--file FILE) [--decode IDS]: encodes text
// to token ids, or decodes ids to text, with the model's tokenizer.json.

#include "apps/thaw/commands.hpp"

#include "runtime/common/log.hpp"
#include "runtime/common/posix.hpp"
#include "runtime/engine/tokenizer.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace thaw::app {
namespace {

struct tokenize_args {
  common_options common;
  std::string path;
  std::string text;
  std::string file;
  std::string decode;
  bool no_special = false;
  bool json = false;
  int repeat = 0;
  bool has_decode = false;
};

// "1,15043 3186" -> ids; anything else is named in the error.
expected<std::vector<std::int32_t>> parse_ids(const std::string& s) {
  std::vector<std::int32_t> ids;
  std::size_t i = 0;
  while (i < s.size()) {
    if (s[i] == ',' || s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
      ++i;
      continue;
    }
    std::size_t j = i;
    if (s[j] == '-')
      ++j;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9')
      ++j;
    const auto word = s.substr(i, j - i);
    if (word.empty() || word == "-" || (j < s.size() && s[j] != ',' && s[j] != ' ' && s[j] != '\t' && s[j] != '\n') ||
        word.size() > 10)
      return make_error(errc::invalid_argument, "--decode: '" + s.substr(i, s.find_first_of(", ", i) - i) +
                                                    "' is not a token id (ids are integers separated by "
                                                    "commas or spaces)");
    const long long v = std::stoll(word);
    if (v < INT32_MIN || v > INT32_MAX)
      return make_error(errc::invalid_argument, "--decode: " + word + " is not a token id");
    ids.push_back(static_cast<std::int32_t>(v));
    i = j;
  }
  return ids;
}

int run_tokenize(const tokenize_args& a) {
  if (auto s = init_logging(a.common.log_level); !s)
    return report_error("tokenize", s.err());
  std::filesystem::path path = a.path;
  if (std::filesystem::is_directory(path))
    path /= "tokenizer.json";
  auto tok = tokenizer::load(path);
  if (!tok)
    return report_error("tokenize", tok.err());

  if (a.has_decode) {
    auto ids = parse_ids(a.decode);
    if (!ids)
      return report_error("tokenize", ids.err());
    auto text = tok->decode(*ids, !a.no_special);
    if (!text)
      return report_error("tokenize", text.err());
    if (a.json)
      std::printf("%s\n", nlohmann::json{{"text", *text}}.dump().c_str());
    else
      std::printf("%s\n", text->c_str());
    return 0;
  }

  std::string text = a.text;
  if (!a.file.empty()) {
    auto t = read_text_file(a.file);
    if (!t)
      return report_error("tokenize", t.err());
    text = std::move(*t);
  }
  auto ids = tok->encode(text, !a.no_special);
  if (!ids)
    return report_error("tokenize", ids.err());
  nlohmann::json j{{"tokens", *ids}, {"count", ids->size()}};
  if (a.repeat > 0) {
    // Throughput: encode the text `repeat` more times and report input megabytes a second.
    const auto start = std::chrono::steady_clock::now();
    std::size_t total = 0;
    for (int r = 0; r < a.repeat; ++r)
      total += tok->encode(text, !a.no_special)->size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    j["mb_per_s"] = static_cast<double>(text.size()) * a.repeat / 1e6 / s;
    j["tokens_per_s"] = static_cast<double>(total) / s;
  }
  if (a.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::string line;
    for (std::size_t i = 0; i < ids->size(); ++i)
      line += (i ? " " : "") + std::to_string((*ids)[i]);
    std::printf("%s\n", line.c_str());
    if (a.repeat > 0)
      std::fprintf(stderr, "encode: %.2f MB/s, %.0f tokens/s\n", j["mb_per_s"].get<double>(),
                   j["tokens_per_s"].get<double>());
  }
  return 0;
}

} // namespace

void add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<tokenize_args>();
  auto* cmd = app.add_subcommand("tokenize", "Encode text to token ids, or decode ids to text");
  cmd->add_option("PATH", args->path, "Checkpoint directory or tokenizer.json")->required();
  auto* text = cmd->add_option("--text", args->text, "Text to encode");
  auto* file = cmd->add_option("--file", args->file, "File whose contents to encode");
  auto* decode = cmd->add_option("--decode", args->decode, "Token ids to decode (\"1,15043 3186\")");
  text->excludes(file);
  decode->excludes(text)->excludes(file);
  cmd->add_flag("--no-special", args->no_special,
                "Encode without BOS; decode with special tokens written out");
  cmd->add_flag("--json", args->json, "Print JSON ({\"tokens\":[...],\"count\":N} or {\"text\":...})");
  cmd->add_option("--repeat", args->repeat, "Also time N more encodes and report MB/s")
      ->check(CLI::NonNegativeNumber);
  add_common_options(*cmd, args->common);
  cmd->callback([args, text, file, decode] {
    if (text->count() == 0 && file->count() == 0 && decode->count() == 0) {
      run_result = report_error(
          "tokenize", make_error(errc::invalid_argument, "give --text, --file or --decode"));
      return;
    }
    args->has_decode = decode->count() > 0;
    run_result = run_tokenize(*args);
  });
}

} // namespace thaw::app
