#include "runtime/checkpoint/manifest.hpp"

#include "schema/checkpoint.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/exception.h>

#include <cstring>

namespace thaw {
namespace {

schema::DType to_schema(dtype t) {
  switch (t) {
    case dtype::f32: return schema::DType::F32;
    case dtype::f16: return schema::DType::F16;
    case dtype::bf16: return schema::DType::BF16;
  }
  return schema::DType::F32;
}

expected<dtype> from_schema(schema::DType t, std::string_view what) {
  switch (t) {
    case schema::DType::F32: return dtype::f32;
    case schema::DType::F16: return dtype::f16;
    case schema::DType::BF16: return dtype::bf16;
  }
  return make_error(errc::unsupported, std::string{what} + ": unknown dtype code " +
                                           std::to_string(static_cast<int>(t)));
}

expected<architecture> from_schema(schema::Architecture a) {
  switch (a) {
    case schema::Architecture::LLAMA: return architecture::llama;
    case schema::Architecture::QWEN2: return architecture::qwen2;
    case schema::Architecture::MISTRAL: return architecture::mistral;
  }
  return make_error(errc::unsupported,
                    "unknown architecture code " + std::to_string(static_cast<int>(a)));
}

schema::Architecture to_schema(architecture a) {
  switch (a) {
    case architecture::llama: return schema::Architecture::LLAMA;
    case architecture::qwen2: return schema::Architecture::QWEN2;
    case architecture::mistral: return schema::Architecture::MISTRAL;
  }
  return schema::Architecture::LLAMA;
}

void encode_config(const model_config& c, schema::ModelConfig::Builder b) {
  b.setArchitecture(to_schema(c.arch));
  b.setVocabSize(c.vocab_size);
  b.setHiddenSize(c.hidden_size);
  b.setIntermediateSize(c.intermediate_size);
  b.setNumLayers(c.num_layers);
  b.setNumHeads(c.num_heads);
  b.setNumKvHeads(c.num_kv_heads);
  b.setHeadDim(c.head_dim);
  b.setMaxPositionEmbeddings(c.max_position_embeddings);
  b.setRopeTheta(c.rope_theta);
  b.setRmsNormEps(c.rms_norm_eps);
  b.setTieWordEmbeddings(c.tie_word_embeddings);
  b.setAttentionBias(c.attention_bias);
  b.setSlidingWindow(c.sliding_window);
  b.setBosTokenId(c.bos_token_id);
  auto eos = b.initEosTokenIds(static_cast<unsigned>(c.eos_token_ids.size()));
  for (unsigned i = 0; i < c.eos_token_ids.size(); ++i)
    eos.set(i, c.eos_token_ids[i]);
  auto rs = b.initRopeScaling();
  rs.setType(c.rope_scaling.type);
  rs.setFactor(c.rope_scaling.factor);
  rs.setLowFreqFactor(c.rope_scaling.low_freq_factor);
  rs.setHighFreqFactor(c.rope_scaling.high_freq_factor);
  rs.setOriginalMaxPositionEmbeddings(c.rope_scaling.original_max_position_embeddings);
  b.setWeightDtype(to_schema(c.torch_dtype));
}

expected<model_config> decode_config(schema::ModelConfig::Reader r) {
  model_config c;
  THAW_ASSIGN(c.arch, from_schema(r.getArchitecture()));
  c.vocab_size = r.getVocabSize();
  c.hidden_size = r.getHiddenSize();
  c.intermediate_size = r.getIntermediateSize();
  c.num_layers = r.getNumLayers();
  c.num_heads = r.getNumHeads();
  c.num_kv_heads = r.getNumKvHeads();
  c.head_dim = r.getHeadDim();
  c.max_position_embeddings = r.getMaxPositionEmbeddings();
  c.rope_theta = r.getRopeTheta();
  c.rms_norm_eps = r.getRmsNormEps();
  c.tie_word_embeddings = r.getTieWordEmbeddings();
  c.attention_bias = r.getAttentionBias();
  c.sliding_window = r.getSlidingWindow();
  c.bos_token_id = r.getBosTokenId();
  for (auto id : r.getEosTokenIds())
    c.eos_token_ids.push_back(id);
  auto rs = r.getRopeScaling();
  c.rope_scaling.type = rs.getType().cStr();
  c.rope_scaling.factor = rs.getFactor();
  c.rope_scaling.low_freq_factor = rs.getLowFreqFactor();
  c.rope_scaling.high_freq_factor = rs.getHighFreqFactor();
  c.rope_scaling.original_max_position_embeddings = rs.getOriginalMaxPositionEmbeddings();
  THAW_ASSIGN(c.torch_dtype, from_schema(r.getWeightDtype(), "config.weightDtype"));
  return c;
}

} // namespace

std::string encode_manifest(const manifest& m) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<schema::Manifest>();
  root.setFormatVersion(m.format_version);
  encode_config(m.config, root.initConfig());
  auto tensors = root.initTensors(static_cast<unsigned>(m.tensors.size()));
  for (unsigned i = 0; i < m.tensors.size(); ++i) {
    const auto& t = m.tensors[i];
    auto b = tensors[i];
    b.setName(t.name);
    b.setDtype(to_schema(t.type));
    auto shape = b.initShape(static_cast<unsigned>(t.shape.size()));
    for (unsigned d = 0; d < t.shape.size(); ++d)
      shape.set(d, t.shape[d]);
    b.setFile(t.file);
    b.setOffset(t.offset);
    b.setBytes(t.bytes);
    b.setLayer(t.layer);
  }
  auto files = root.initFiles(static_cast<unsigned>(m.files.size()));
  for (unsigned i = 0; i < m.files.size(); ++i) {
    const auto& f = m.files[i];
    auto b = files[i];
    b.setName(f.name);
    b.setBytes(f.bytes);
    b.setChunkBytes(f.chunk_bytes);
    auto sums = b.initChunkChecksums(static_cast<unsigned>(f.chunk_checksums.size()));
    for (unsigned c = 0; c < f.chunk_checksums.size(); ++c)
      sums.set(c, f.chunk_checksums[c]);
  }
  root.setTotalBytes(m.total_bytes);
  root.setSource(m.source);
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

expected<manifest> decode_manifest(std::string_view bytes, std::string_view source) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0)
    return make_error(errc::parse_error, std::string{source} + ": " +
                                             std::to_string(bytes.size()) +
                                             " bytes is not a Cap'n Proto message");
  // Copy into word-aligned memory: the reader requires alignment.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  manifest m;
  auto decode = [&]() -> status {
    capnp::ReaderOptions options;
    // A manifest lists every chunk checksum: allow large ones (1 TiB model / 16 MiB chunks
    // is 64 K checksums, far below this), but bounded against hostile input.
    options.traversalLimitInWords = 1ull << 30;
    capnp::FlatArrayMessageReader reader(words.asPtr(), options);
    auto root = reader.getRoot<schema::Manifest>();
    m.format_version = root.getFormatVersion();
    if (m.format_version != checkpoint_format_version)
      return make_error(errc::unsupported,
                        std::string{source} + ": format version " +
                            std::to_string(m.format_version) + " (this thaw reads version " +
                            std::to_string(checkpoint_format_version) + ")");
    auto cfg = decode_config(root.getConfig());
    if (!cfg)
      return with_context(cfg.err(), source);
    m.config = *cfg;
    for (auto t : root.getTensors()) {
      tensor_entry e;
      e.name = t.getName().cStr();
      auto type = from_schema(t.getDtype(), "tensor " + e.name);
      if (!type)
        return with_context(type.err(), source);
      e.type = *type;
      for (auto d : t.getShape())
        e.shape.push_back(d);
      e.file = t.getFile();
      e.offset = t.getOffset();
      e.bytes = t.getBytes();
      e.layer = t.getLayer();
      m.tensors.push_back(std::move(e));
    }
    for (auto f : root.getFiles()) {
      data_file_entry e;
      e.name = f.getName().cStr();
      e.bytes = f.getBytes();
      e.chunk_bytes = f.getChunkBytes();
      for (auto c : f.getChunkChecksums())
        e.chunk_checksums.push_back(c);
      m.files.push_back(std::move(e));
    }
    m.total_bytes = root.getTotalBytes();
    m.source = root.getSource().cStr();
    return {};
  };
  try {
    THAW_TRY(decode());
  } catch (const kj::Exception& e) {
    return make_error(errc::parse_error, std::string{source} + ": malformed manifest: " +
                                             std::string{e.getDescription().cStr()});
  }
  return m;
}

} // namespace thaw
