// tokenizer.json loading, the encode/decode pipelines and the streaming detokenizer.

#include "runtime/engine/tokenizer_impl.hpp"

#include "runtime/common/posix.hpp"

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>

namespace thaw {

namespace {

using json = nlohmann::json;

// GPT-2's byte <-> printable code point table: printable Latin-1 bytes map to themselves, the
// rest to U+0100 upwards in byte order.
std::array<char32_t, 256> byte_to_unicode() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

std::string token_content(const json& j) {
  if (j.is_string())
    return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return {};
}

error bad(std::string_view source, const std::string& what, errc code = errc::parse_error) {
  return make_error(code, std::string{source} + ": " + what);
}

status parse_normalizer(const json& n, tokenizer::impl& t, std::string_view source) {
  if (n.is_null())
    return {};
  const auto type = n.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : n.at("normalizers"))
      THAW_TRY(parse_normalizer(sub, t, source));
  } else if (type == "NFC") {
    t.nfc = true;
  } else if (type == "Prepend") {
    t.prepend = n.at("prepend").get<std::string>();
  } else if (type == "Replace") {
    const auto& pat = n.at("pattern");
    if (!pat.contains("String") || pat["String"] != " ")
      return bad(source, "normalizer Replace supports only the pattern \" \"", errc::unsupported);
    t.space_replacement = n.at("content").get<std::string>();
  } else {
    return bad(source, "normalizer '" + type + "' is not supported", errc::unsupported);
  }
  return {};
}

constexpr std::string_view qwen_split_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Llama 3's: the same but digits go in runs of up to three.
constexpr std::string_view llama3_split_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

status parse_pre_tokenizer(const json& p, tokenizer::impl& t, std::string_view source) {
  if (p.is_null())
    return {};
  const auto type = p.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : p.at("pretokenizers"))
      THAW_TRY(parse_pre_tokenizer(sub, t, source));
  } else if (type == "Split") {
    const auto& pat = p.at("pattern");
    const auto regex = pat.contains("Regex") ? pat["Regex"].get<std::string>() : std::string{};
    if ((regex != qwen_split_regex && regex != llama3_split_regex) ||
        p.value("behavior", "") != "Isolated" || p.value("invert", false))
      return bad(source, "pre-tokenizer Split supports only the Qwen2/Qwen3 and Llama 3 regexes, "
                         "Isolated", errc::unsupported);
    t.split_regex = true;
    t.split_max_digits = regex == llama3_split_regex ? 3 : 1;
  } else if (type == "ByteLevel") {
    if (p.value("add_prefix_space", false) || p.value("use_regex", true))
      return bad(source, "pre-tokenizer ByteLevel with add_prefix_space or use_regex is not "
                         "supported", errc::unsupported);
    t.kind = tokenizer::impl::model_kind::byte_level_bpe;
  } else {
    return bad(source, "pre-tokenizer '" + type + "' is not supported", errc::unsupported);
  }
  return {};
}

status parse_decoder(const json& d, tokenizer::impl& t, std::string_view source) {
  if (d.is_null())
    return {};
  const auto type = d.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : d.at("decoders"))
      THAW_TRY(parse_decoder(sub, t, source));
  } else if (type == "Strip") {
    if (d.value("content", "") != " " || d.value("start", 0) != 1 || d.value("stop", 0) != 0)
      return bad(source, "decoder Strip supports only one leading space", errc::unsupported);
    t.strip_leading_space = true;
  } else if (type != "Replace" && type != "ByteFallback" && type != "Fuse" &&
             type != "ByteLevel") {
    // Replace("▁" -> " "), ByteFallback, Fuse and ByteLevel follow from the model kind.
    return bad(source, "decoder '" + type + "' is not supported", errc::unsupported);
  }
  return {};
}

expected<std::int32_t> id_of(const tokenizer::impl& t, const std::string& token,
                             std::string_view source, const char* what) {
  auto it = t.vocab.find(token);
  if (it == t.vocab.end())
    return bad(source, std::string{what} + " '" + token + "' is not in the vocabulary");
  return it->second;
}

expected<std::unique_ptr<tokenizer::impl>> parse_impl(std::string_view text,
                                                      std::string_view config_text,
                                                      std::string_view source) {
  auto root = json::parse(text, nullptr, false);
  if (root.is_discarded() || !root.is_object())
    return bad(source, "not a JSON object");
  auto t = std::make_unique<tokenizer::impl>();
  static std::atomic<std::uint64_t> next_serial{1};
  t->serial = next_serial.fetch_add(1);
  const auto& model = root.at("model");
  if (model.value("type", "") != "BPE")
    return bad(source, "model type '" + model.value("type", "") + "' is not supported (BPE only)",
               errc::unsupported);
  THAW_TRY(parse_normalizer(root.value("normalizer", json{}), *t, source));
  THAW_TRY(parse_pre_tokenizer(root.value("pre_tokenizer", json{}), *t, source));
  THAW_TRY(parse_decoder(root.value("decoder", json{}), *t, source));

  std::int32_t max_id = -1;
  for (const auto& [token, id] : model.at("vocab").items()) {
    const auto v = id.get<std::int32_t>();
    if (v < 0)
      return bad(source, "vocab id of '" + token + "' is negative");
    t->vocab.emplace(token, v);
    max_id = std::max(max_id, v);
  }
  for (const auto& a : root.value("added_tokens", json::array())) {
    tokenizer::impl::added_token at{a.at("content").get<std::string>(), a.at("id").get<std::int32_t>(),
                                    a.value("special", false)};
    if (at.id < 0 || at.content.empty())
      return bad(source, "added token with a negative id or empty content");
    t->vocab.emplace(at.content, at.id);
    max_id = std::max(max_id, at.id);
    t->added.push_back(std::move(at));
  }
  t->id_to_token.resize(static_cast<std::size_t>(max_id + 1));
  for (const auto& [token, id] : t->vocab)
    t->id_to_token[static_cast<std::size_t>(id)] = token;
  t->special.assign(t->id_to_token.size(), 0);
  std::sort(t->added.begin(), t->added.end(),
            [](const auto& a, const auto& b) { return a.content.size() > b.content.size(); });
  for (std::uint32_t i = 0; i < t->added.size(); ++i) {
    const auto& a = t->added[i];
    t->added_by_first_byte[static_cast<unsigned char>(a.content[0])].push_back(i);
    if (a.special)
      t->special[static_cast<std::size_t>(a.id)] = 1;
  }

  t->byte_fallback = model.value("byte_fallback", false);
  t->ignore_merges = model.value("ignore_merges", false);
  if (const auto unk = model.value("unk_token", json{}); unk.is_string()) {
    THAW_ASSIGN(t->unk_id, id_of(*t, unk.get<std::string>(), source, "unk_token"));
  }
  t->byte_of_token.assign(t->id_to_token.size(), -1);
  if (t->kind == tokenizer::impl::model_kind::byte_level_bpe) {
    const auto table = byte_to_unicode();
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(s, table[static_cast<std::size_t>(b)]);
      THAW_ASSIGN(t->byte_token[static_cast<std::size_t>(b)], id_of(*t, s, source, "byte token"));
      t->byte_chars[static_cast<std::size_t>(b)] = s;
    }
  } else {
    static constexpr char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const std::string s = std::string{"<0x"} + hex[b >> 4] + hex[b & 15] + ">";
      auto it = t->vocab.find(s);
      t->byte_token[static_cast<std::size_t>(b)] = it != t->vocab.end() ? it->second : t->unk_id;
      if (it != t->vocab.end())
        t->byte_of_token[static_cast<std::size_t>(it->second)] = static_cast<std::int16_t>(b);
    }
  }

  if (t->kind == tokenizer::impl::model_kind::sentencepiece_bpe && !t->space_replacement.empty() &&
      (t->byte_fallback || t->unk_id >= 0)) {
    const auto& r = t->space_replacement;
    t->split_words = std::none_of(t->id_to_token.begin(), t->id_to_token.end(), [&](const std::string& tok) {
      for (auto p = tok.find(r, 1); p != std::string::npos; p = tok.find(r, p + 1))
        if (p < r.size() || tok.compare(p - r.size(), r.size(), r) != 0)
          return true;
      return false;
    });
  }

  std::int32_t rank = 0;
  for (const auto& m : model.at("merges")) {
    std::string a;
    std::string b;
    if (m.is_array() && m.size() == 2) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else if (m.is_string()) {
      const auto s = m.get<std::string>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        return bad(source, "merge '" + s + "' is not two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      return bad(source, "merge " + std::to_string(rank) + " is neither \"a b\" nor [a, b]");
    }
    THAW_ASSIGN(const auto ia, id_of(*t, a, source, "merge token"));
    THAW_ASSIGN(const auto ib, id_of(*t, b, source, "merge token"));
    THAW_ASSIGN(const auto ir, id_of(*t, a + b, source, "merge result"));
    t->merges.emplace(tokenizer::impl::pair_key(ia, ib), tokenizer::impl::merge{rank, ir});
    ++rank;
  }

  // Post-processor: TemplateProcessing's special tokens around $A (Llama 2: <s> first).
  if (const auto pp = root.value("post_processor", json{}); pp.is_object()) {
    const auto type = pp.value("type", "");
    if (type == "TemplateProcessing") {
      bool after = false;
      for (const auto& piece : pp.at("single")) {
        if (piece.contains("Sequence")) {
          after = true;
        } else if (piece.contains("SpecialToken")) {
          const auto name = piece["SpecialToken"].at("id").get<std::string>();
          std::vector<std::int32_t> ids;
          if (pp.contains("special_tokens") && pp["special_tokens"].contains(name))
            ids = pp["special_tokens"][name].at("ids").get<std::vector<std::int32_t>>();
          else
            ids.push_back(id_of(*t, name, source, "post-processor token").value());
          auto& dst = after ? t->suffix_ids : t->prefix_ids;
          dst.insert(dst.end(), ids.begin(), ids.end());
        }
      }
    } else if (type != "ByteLevel") {
      return bad(source, "post-processor '" + type + "' is not supported", errc::unsupported);
    }
  }

  // BOS/EOS and the chat template from tokenizer_config.json.
  if (!config_text.empty()) {
    auto cfg = json::parse(config_text, nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
      return make_error(errc::parse_error, "tokenizer_config.json: not a JSON object");
    if (const auto s = token_content(cfg.value("bos_token", json{})); !s.empty()) {
      THAW_ASSIGN(t->bos, id_of(*t, s, "tokenizer_config.json", "bos_token"));
    }
    if (const auto s = token_content(cfg.value("eos_token", json{})); !s.empty()) {
      THAW_ASSIGN(const auto id, id_of(*t, s, "tokenizer_config.json", "eos_token"));
      t->eos.push_back(id);
    }
    if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
      t->chat_template = cfg["chat_template"].get<std::string>();
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean() && t->prefix_ids.empty() &&
        cfg["add_bos_token"].get<bool>() && t->bos >= 0)
      t->prefix_ids.push_back(t->bos);
  }
  if (t->bos < 0 && !t->prefix_ids.empty())
    t->bos = t->prefix_ids.front();
  return t;
}

} // namespace

tokenizer::tokenizer(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;
tokenizer::~tokenizer() = default;

expected<tokenizer> tokenizer::parse(std::string_view tokenizer_json, std::string_view config_json,
                                     std::string_view source) {
  try {
    THAW_ASSIGN(auto p, parse_impl(tokenizer_json, config_json, source));
    return tokenizer{std::move(p)};
  } catch (const std::exception& e) {
    // nlohmann::json throws on a missing key or a wrong type: the file is malformed.
    return make_error(errc::parse_error, std::string{source} + ": " + e.what());
  }
}

expected<tokenizer> tokenizer::load(const std::filesystem::path& tokenizer_json) {
  if (!std::filesystem::exists(tokenizer_json))
    return make_error(errc::not_found, tokenizer_json.string() + ": no such file");
  THAW_ASSIGN(const auto text, read_text_file(tokenizer_json));
  std::string config;
  const auto dir = tokenizer_json.parent_path();
  if (const auto cfg = dir / "tokenizer_config.json"; std::filesystem::exists(cfg)) {
    THAW_ASSIGN(config, read_text_file(cfg));
  }
  THAW_ASSIGN(auto tok, parse(text, config, tokenizer_json.string()));
  // generation_config.json's eos_token_id (one id or a list) adds stop tokens.
  if (const auto gen = dir / "generation_config.json"; std::filesystem::exists(gen)) {
    THAW_ASSIGN(const auto gtext, read_text_file(gen));
    const auto g = nlohmann::json::parse(gtext, nullptr, false);
    if (g.is_discarded() || !g.is_object())
      return make_error(errc::parse_error, gen.string() + ": not a JSON object");
    std::vector<std::int32_t> ids;
    if (const auto e = g.value("eos_token_id", nlohmann::json{}); e.is_number_integer())
      ids.push_back(e.get<std::int32_t>());
    else if (e.is_array())
      for (const auto& x : e)
        if (x.is_number_integer())
          ids.push_back(x.get<std::int32_t>());
    for (auto id : ids) {
      if (id < 0 || id >= tok.vocab_size())
        return make_error(errc::parse_error, gen.string() + ": eos_token_id " + std::to_string(id) +
                                                 " is outside the vocabulary");
      auto& eos = tok.impl_->eos;
      if (std::find(eos.begin(), eos.end(), id) == eos.end())
        eos.push_back(id);
    }
  }
  return tok;
}

expected<std::vector<std::int32_t>> tokenizer::encode(std::string_view text, bool add_special) const {
  if (!valid_utf8(text))
    return make_error(errc::invalid_argument, "encode: text is not valid UTF-8");
  const auto& t = *impl_;
  std::vector<std::int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special)
    out.insert(out.end(), t.prefix_ids.begin(), t.prefix_ids.end());
  // Added tokens written in the text are split out first; the rest is normalized and encoded
  // segment by segment (Hugging Face's AddedVocabulary does the same).
  std::size_t seg = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    const auto& cands = t.added_by_first_byte[static_cast<unsigned char>(text[i])];
    const tokenizer::impl::added_token* hit = nullptr;
    for (auto k : cands) {
      const auto& a = t.added[k];
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break; // sorted longest first
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    THAW_TRY(t.encode_segment(text.substr(seg, i - seg), out));
    out.push_back(hit->id);
    i += hit->content.size();
    seg = i;
  }
  THAW_TRY(t.encode_segment(text.substr(seg), out));
  if (add_special)
    out.insert(out.end(), t.suffix_ids.begin(), t.suffix_ids.end());
  return out;
}

expected<std::string> tokenizer::impl::decode_bytes(std::span<const std::int32_t> ids,
                                                    bool skip_special, bool strip_first) const {
  static const auto table = byte_to_unicode();
  static const auto unicode_to_byte = [] {
    std::unordered_map<char32_t, unsigned char> m;
    for (int b = 0; b < 256; ++b)
      m.emplace(table[static_cast<std::size_t>(b)], static_cast<unsigned char>(b));
    return m;
  }();
  std::string out;
  thread_local std::vector<char32_t> cps;
  thread_local std::vector<std::size_t> offs;
  for (const auto id : ids) {
    if (id < 0 || static_cast<std::size_t>(id) >= id_to_token.size())
      return make_error(errc::invalid_argument, "decode: token id " + std::to_string(id) +
                                                    " is outside the vocabulary (size " +
                                                    std::to_string(id_to_token.size()) + ")");
    const auto idx = static_cast<std::size_t>(id);
    if (skip_special && special[idx])
      continue;
    const auto& s = id_to_token[idx];
    if (kind == model_kind::byte_level_bpe) {
      // Each character stands for one byte; a token with other characters (an added token)
      // is its own text.
      const auto start = out.size();
      decode_utf8(s, cps, offs);
      bool mapped = true;
      for (auto c : cps) {
        auto it = unicode_to_byte.find(c);
        if (it == unicode_to_byte.end()) {
          mapped = false;
          break;
        }
        out += static_cast<char>(it->second);
      }
      if (!mapped) {
        out.resize(start);
        out += s;
      }
    } else if (byte_of_token[idx] >= 0) {
      out += static_cast<char>(byte_of_token[idx]);
    } else if (space_replacement.empty()) {
      out += s;
    } else {
      for (std::size_t p = 0; p < s.size();) {
        if (s.compare(p, space_replacement.size(), space_replacement) == 0) {
          out += ' ';
          p += space_replacement.size();
        } else {
          out += s[p++];
        }
      }
    }
  }
  if (strip_first && strip_leading_space && !out.empty() && out[0] == ' ')
    out.erase(0, 1);
  return out;
}

expected<std::string> tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special) const {
  THAW_ASSIGN(const auto bytes, impl_->decode_bytes(ids, skip_special, true));
  return to_valid_utf8(bytes);
}

std::int32_t tokenizer::vocab_size() const noexcept {
  return static_cast<std::int32_t>(impl_->id_to_token.size());
}
std::int32_t tokenizer::bos_id() const noexcept { return impl_->bos; }
const std::vector<std::int32_t>& tokenizer::eos_ids() const noexcept { return impl_->eos; }
bool tokenizer::is_special(std::int32_t id) const noexcept {
  return id >= 0 && id < vocab_size() && impl_->special[static_cast<std::size_t>(id)];
}
bool tokenizer::add_bos() const noexcept {
  return !impl_->prefix_ids.empty() && impl_->prefix_ids.front() == impl_->bos;
}
expected<std::string> tokenizer::token_text(std::int32_t id) const {
  if (id < 0 || id >= vocab_size())
    return make_error(errc::invalid_argument,
                      "token id " + std::to_string(id) + " is outside the vocabulary");
  return impl_->id_to_token[static_cast<std::size_t>(id)];
}
const std::string& tokenizer::chat_template_source() const noexcept { return impl_->chat_template; }

detokenizer::detokenizer(const tokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special) {}

expected<std::string> detokenizer::push(std::int32_t id) {
  if (id < 0 || id >= tok_->vocab_size())
    return make_error(errc::invalid_argument, "detokenizer: token id " + std::to_string(id) +
                                                  " is outside the vocabulary");
  ids_.push_back(id);
  THAW_ASSIGN(const auto bytes, tok_->internals().decode_bytes(ids_, skip_special_, !started_));
  // Hold back a character whose bytes have not all arrived; the rest is final.
  const auto held = incomplete_utf8_tail(bytes);
  auto text = to_valid_utf8(std::string_view{bytes}.substr(0, bytes.size() - held));
  std::string piece = text.substr(emitted_.size());
  if (held > 0) {
    emitted_ = std::move(text);
    return piece;
  }
  // Only the very first token of the stream loses its leading space (Strip decoder).
  for (auto i : ids_)
    started_ = started_ || !(skip_special_ && tok_->is_special(i));
  ids_.clear();
  emitted_.clear();
  return piece;
}

std::string detokenizer::flush() {
  auto bytes = tok_->internals().decode_bytes(ids_, skip_special_, !started_);
  std::string piece;
  if (bytes)
    piece = to_valid_utf8(*bytes).substr(emitted_.size());
  for (auto i : ids_)
    started_ = started_ || !(skip_special_ && tok_->is_special(i));
  ids_.clear();
  emitted_.clear();
  return piece;
}

} // namespace thaw
