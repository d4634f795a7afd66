#include "runtime/checkpoint/make_model.hpp"
#include "runtime/checkpoint/model_config.hpp"

#include <gtest/gtest.h>

#include <string>

namespace thaw {
namespace {

// meta-llama/Llama-3.2-1B-Instruct's config.json as published.
constexpr const char* llama32_config = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// Qwen/Qwen2.5-0.5B's config.json: no attention_bias key (Qwen2 always has q/k/v biases), and a
// sliding window that use_sliding_window switches off.
constexpr const char* qwen25_config = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// mistralai/Mistral-7B-v0.1's config.json (no head_dim, untied, 4096-token window).
constexpr const char* mistral_config = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

std::string replace(std::string text, const std::string& from, const std::string& to) {
  auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos)
    text.replace(pos, from.size(), to);
  return text;
}

TEST(ModelConfig, RoundTripsEveryPreset) {
  for (const auto& name : preset_names()) {
    SCOPED_TRACE(name);
    auto cfg = preset_config(name, 32000);
    ASSERT_TRUE(cfg) << cfg.err().to_string();
    cfg->bos_token_id = 1;
    cfg->eos_token_ids = {2};
    cfg->torch_dtype = dtype::bf16;
    auto back = parse_hf_config(to_hf_config_json(*cfg));
    ASSERT_TRUE(back) << back.err().to_string();
    EXPECT_EQ(*back, *cfg);
  }
}

TEST(ModelConfig, RoundTripsSeveralEosAndNoBos) {
  auto cfg = preset_config("llama-3.2-1b", 128256);
  ASSERT_TRUE(cfg);
  cfg->bos_token_id = -1;
  cfg->eos_token_ids = {128001, 128008, 128009};
  cfg->torch_dtype = dtype::f16;
  auto text = to_hf_config_json(*cfg);
  EXPECT_NE(text.find("\"torch_dtype\": \"float16\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"LlamaForCausalLM\""), std::string::npos) << text;
  auto back = parse_hf_config(text);
  ASSERT_TRUE(back) << back.err().to_string();
  EXPECT_EQ(*back, *cfg);
}

TEST(ModelConfig, ParsesLlama32Config) {
  auto cfg = parse_hf_config(llama32_config);
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->arch, architecture::llama);
  EXPECT_EQ(cfg->vocab_size, 128256u);
  EXPECT_EQ(cfg->hidden_size, 2048u);
  EXPECT_EQ(cfg->num_layers, 16u);
  EXPECT_EQ(cfg->num_heads, 32u);
  EXPECT_EQ(cfg->num_kv_heads, 8u);
  EXPECT_EQ(cfg->head_dim, 64u);
  EXPECT_EQ(cfg->max_position_embeddings, 131072u);
  EXPECT_DOUBLE_EQ(cfg->rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(cfg->rms_norm_eps, 1e-5);
  EXPECT_TRUE(cfg->tie_word_embeddings);
  EXPECT_FALSE(cfg->attention_bias);
  EXPECT_EQ(cfg->bos_token_id, 128000);
  EXPECT_EQ(cfg->eos_token_ids, (std::vector<std::int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(cfg->rope_scaling, (rope_scaling_config{"llama3", 32.0, 1.0, 4.0, 8192}));
  EXPECT_EQ(cfg->torch_dtype, dtype::bf16);
  // The published parameter count of Llama 3.2 1B.
  EXPECT_EQ(parameter_count(*cfg), 1'235'814'400u);
}

TEST(ModelConfig, ParsesQwen25Config) {
  auto cfg = parse_hf_config(qwen25_config);
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->arch, architecture::qwen2);
  EXPECT_TRUE(cfg->attention_bias);
  EXPECT_TRUE(cfg->tie_word_embeddings);
  EXPECT_EQ(cfg->sliding_window, 0u); // use_sliding_window: false
  EXPECT_EQ(cfg->head_dim, 64u);
  EXPECT_EQ(cfg->num_kv_heads, 2u);
  EXPECT_DOUBLE_EQ(cfg->rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(cfg->rms_norm_eps, 1e-6);
  EXPECT_EQ(cfg->eos_token_ids, (std::vector<std::int64_t>{151643}));
  EXPECT_TRUE(cfg->rope_scaling.type.empty());
  // Qwen's model card: 0.49B parameters, 494,032,768 by transformers' count.
  EXPECT_EQ(parameter_count(*cfg), 494'032'768u);
}

TEST(ModelConfig, ParsesMistralConfig) {
  auto cfg = parse_hf_config(mistral_config);
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->arch, architecture::mistral);
  EXPECT_EQ(cfg->sliding_window, 4096u);
  EXPECT_EQ(cfg->head_dim, 128u); // hidden / heads when not stated
  EXPECT_FALSE(cfg->tie_word_embeddings);
  EXPECT_EQ(parameter_count(*cfg), 7'241'732'096u); // Mistral 7B's published count

  auto no_window = parse_hf_config(replace(mistral_config, "\"sliding_window\": 4096",
                                           "\"sliding_window\": null"));
  ASSERT_TRUE(no_window) << no_window.err().to_string();
  EXPECT_EQ(no_window->sliding_window, 0u);
}

TEST(ModelConfig, DefaultsOptionalFields) {
  auto text = replace(llama32_config, "\"head_dim\": 64,", "\"head_dim\": null,");
  text = replace(text, "\"num_key_value_heads\": 8,", "");
  text = replace(text, "\"rope_theta\": 500000.0,", "");
  text = replace(text, "\"tie_word_embeddings\": true,", "");
  auto cfg = parse_hf_config(text);
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->head_dim, 64u);
  EXPECT_EQ(cfg->num_kv_heads, 32u);
  EXPECT_DOUBLE_EQ(cfg->rope_theta, 10000.0);
  EXPECT_FALSE(cfg->tie_word_embeddings);
}

TEST(ModelConfig, AcceptsLegacyRopeScalingType) {
  auto text = replace(llama32_config, "\"rope_type\": \"llama3\"", "\"type\": \"linear\"");
  auto cfg = parse_hf_config(text);
  ASSERT_TRUE(cfg) << cfg.err().to_string();
  EXPECT_EQ(cfg->rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(cfg->rope_scaling.factor, 32.0);
}

TEST(ModelConfig, MissingFieldNamesFieldAndFile) {
  auto cfg = parse_hf_config(replace(llama32_config, "\"hidden_size\": 2048,", ""),
                             "models/x/config.json");
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.err().code, errc::parse_error);
  EXPECT_NE(cfg.err().message.find("hidden_size"), std::string::npos) << cfg.err().message;
  EXPECT_NE(cfg.err().message.find("models/x/config.json"), std::string::npos);
}

TEST(ModelConfig, WrongTypeNamesField) {
  auto cfg = parse_hf_config(
      replace(llama32_config, "\"num_attention_heads\": 32", "\"num_attention_heads\": \"32\""));
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.err().code, errc::parse_error);
  EXPECT_NE(cfg.err().message.find("num_attention_heads"), std::string::npos);
}

TEST(ModelConfig, UnsupportedArchitectureNamesIt) {
  auto cfg = parse_hf_config(
      replace(llama32_config, "\"LlamaForCausalLM\"", "\"GPT2LMHeadModel\""));
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.err().code, errc::unsupported);
  EXPECT_NE(cfg.err().message.find("GPT2LMHeadModel"), std::string::npos);
  EXPECT_NE(cfg.err().message.find("architectures"), std::string::npos);
}

TEST(ModelConfig, UnsupportedDtypeAndRopeNameTheField) {
  auto dt = parse_hf_config(replace(llama32_config, "\"bfloat16\"", "\"float64\""));
  ASSERT_FALSE(dt);
  EXPECT_EQ(dt.err().code, errc::unsupported);
  EXPECT_NE(dt.err().message.find("torch_dtype"), std::string::npos) << dt.err().message;

  auto rope = parse_hf_config(replace(llama32_config, "\"llama3\"", "\"longrope\""));
  ASSERT_FALSE(rope);
  EXPECT_EQ(rope.err().code, errc::unsupported);
  EXPECT_NE(rope.err().message.find("rope_scaling"), std::string::npos);
}

TEST(ModelConfig, InvalidJsonNamesFile) {
  auto cfg = parse_hf_config("{\"vocab_size\": 12,", "broken/config.json");
  ASSERT_FALSE(cfg);
  EXPECT_EQ(cfg.err().code, errc::parse_error);
  EXPECT_NE(cfg.err().message.find("broken/config.json"), std::string::npos);
}

TEST(ModelConfig, ValidateNamesOffendingField) {
  auto cfg = parse_hf_config(
      replace(llama32_config, "\"num_key_value_heads\": 8", "\"num_key_value_heads\": 3"));
  ASSERT_FALSE(cfg);
  EXPECT_NE(cfg.err().message.find("num_key_value_heads"), std::string::npos);

  auto c = preset_config("tiny", 100);
  ASSERT_TRUE(c);
  c->head_dim = 7;
  auto odd = c->validate();
  ASSERT_FALSE(odd);
  EXPECT_NE(odd.err().message.find("head_dim"), std::string::npos);
  c->head_dim = 8;
  c->intermediate_size = 0;
  auto zero = c->validate();
  ASSERT_FALSE(zero);
  EXPECT_NE(zero.err().message.find("intermediate_size"), std::string::npos);
}

TEST(ModelConfig, ExpectedTensorsTinyLlama) {
  auto cfg = preset_config("tiny", 1000);
  ASSERT_TRUE(cfg);
  auto t = expected_tensors(*cfg);
  ASSERT_EQ(t.size(), 1u + 2 * 9 + 1); // tied: no lm_head
  EXPECT_EQ(t[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(t[0].shape, (std::vector<std::uint64_t>{1000, 16}));
  EXPECT_EQ(t[0].layer, -1);
  const std::vector<std::pair<std::string, std::vector<std::uint64_t>>> layer1 = {
      {"model.layers.1.input_layernorm.weight", {16}},
      {"model.layers.1.self_attn.q_proj.weight", {16, 16}},
      {"model.layers.1.self_attn.k_proj.weight", {8, 16}},
      {"model.layers.1.self_attn.v_proj.weight", {8, 16}},
      {"model.layers.1.self_attn.o_proj.weight", {16, 16}},
      {"model.layers.1.post_attention_layernorm.weight", {16}},
      {"model.layers.1.mlp.gate_proj.weight", {48, 16}},
      {"model.layers.1.mlp.up_proj.weight", {48, 16}},
      {"model.layers.1.mlp.down_proj.weight", {16, 48}},
  };
  for (std::size_t i = 0; i < layer1.size(); ++i) {
    EXPECT_EQ(t[10 + i].name, layer1[i].first);
    EXPECT_EQ(t[10 + i].shape, layer1[i].second) << layer1[i].first;
    EXPECT_EQ(t[10 + i].layer, 1);
  }
  EXPECT_EQ(t.back().name, "model.norm.weight");
  EXPECT_EQ(t.back().layer, 2);
}

TEST(ModelConfig, ExpectedTensorsBiasesAndUntiedHead) {
  auto qwen = preset_config("tiny-qwen2", 1000);
  ASSERT_TRUE(qwen);
  auto q = expected_tensors(*qwen);
  ASSERT_EQ(q.size(), 1u + 2 * 12 + 1);
  EXPECT_EQ(q[3].name, "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(q[3].shape, (std::vector<std::uint64_t>{16}));
  EXPECT_EQ(q[5].name, "model.layers.0.self_attn.k_proj.bias");
  EXPECT_EQ(q[5].shape, (std::vector<std::uint64_t>{8}));

  auto mistral = preset_config("tiny-mistral", 1000);
  ASSERT_TRUE(mistral);
  auto m = expected_tensors(*mistral);
  ASSERT_EQ(m.size(), 1u + 2 * 9 + 2);
  EXPECT_EQ(m.back().name, "lm_head.weight");
  EXPECT_EQ(m.back().shape, (std::vector<std::uint64_t>{1000, 16}));
  EXPECT_EQ(m.back().layer, 2);

  // Llama 3 8B: the published 8,030,261,248 parameters, GQA k/v of 1024 rows.
  auto l8 = preset_config("llama-3-8b", 128256);
  ASSERT_TRUE(l8);
  EXPECT_EQ(parameter_count(*l8), 8'030'261'248u);
  auto big = expected_tensors(*l8);
  EXPECT_EQ(big[3].name, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(big[3].shape, (std::vector<std::uint64_t>{1024, 4096}));
}

TEST(ModelConfig, IgnorableTensors) {
  EXPECT_TRUE(is_ignorable_tensor("model.layers.0.self_attn.rotary_emb.inv_freq"));
  EXPECT_FALSE(is_ignorable_tensor("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(is_ignorable_tensor("model.norm.weight"));
}

} // namespace
} // namespace thaw
