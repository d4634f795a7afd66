// Chat templates: exact renderings of ChatML (Qwen3), Llama 2 and Llama 3 conversations, written
// out by hand from the Jinja templates, and the errors.

#include "runtime/engine/chat_template.hpp"

#include "runtime/engine/tokenizer.hpp"

#include <filesystem>
#include <gtest/gtest.h>

namespace thaw {
namespace {

using msgs = std::vector<chat_message>;

// The Llama-2-chat template as Meta's tokenizer_config.json ships it.
constexpr std::string_view llama2_source =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] "
    "%}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ "
    "bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' "
    "%}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

constexpr std::string_view llama3_source =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ "
    "content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

TEST(ChatTemplate, Llama2) {
  auto t = chat_template::from_source(llama2_source);
  ASSERT_TRUE(t) << t.err().to_string();
  EXPECT_EQ(t->family(), chat_family::llama2);
  msgs m{{"system", "Be brief."}, {"user", " Hi there "}, {"assistant", "Hello!"}, {"user", "Why?"}};
  // strip() applies to the system block + first message as a whole, so the user's leading
  // space stays and only its trailing one goes.
  EXPECT_EQ(t->apply(m).value(),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi there [/INST] Hello! </s><s>[INST] Why? [/INST]");
  msgs no_system{{"user", "Hi"}};
  EXPECT_EQ(t->apply(no_system).value(), "<s>[INST] Hi [/INST]");
  msgs bad{{"user", "a"}, {"user", "b"}};
  auto r = t->apply(bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::invalid_argument);
  EXPECT_NE(r.err().message.find("alternate"), std::string::npos);
}

TEST(ChatTemplate, Llama3) {
  auto t = chat_template::from_source(llama3_source);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->family(), chat_family::llama3);
  msgs m{{"system", "S"}, {"user", " Hi\n"}};
  EXPECT_EQ(t->apply(m).value(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(t->apply(m, {.add_generation_prompt = false}).value(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(ChatTemplate, ChatmlWithQwen3Thinking) {
  auto t = chat_template::from_source("{{'<|im_start|>' + x}} </think>");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->family(), chat_family::chatml);
  msgs m{{"system", "You are helpful."}, {"user", "Hi"}};
  EXPECT_EQ(t->apply(m).value(), "<|im_start|>system\nYou are helpful.<|im_end|>\n"
                                 "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t->apply(m, {.enable_thinking = false}).value(),
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n");
  // Earlier assistant turns lose their reasoning; the last one after the last query keeps it.
  msgs turns{{"user", "Q1"},
             {"assistant", "<think>\nr1\n</think>\n\nA1"},
             {"user", "Q2"},
             {"assistant", "<think>\nr2\n</think>\n\nA2"}};
  EXPECT_EQ(t->apply(turns, {.add_generation_prompt = false}).value(),
            "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
            "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2<|im_end|>\n");
  msgs tool{{"user", "Q"}, {"tool", "42"}, {"tool", "43"}};
  EXPECT_EQ(t->apply(tool, {.add_generation_prompt = false}).value(),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response>"
            "\n<tool_response>\n43\n</tool_response><|im_end|>\n");
}

TEST(ChatTemplate, Errors) {
  auto none = chat_template::from_source("");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.err().code, errc::not_found);
  auto other = chat_template::from_source("{{ messages }}");
  ASSERT_FALSE(other);
  EXPECT_EQ(other.err().code, errc::unsupported);
  auto t = chat_template::from_source(llama3_source);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->apply(msgs{}).err().code, errc::invalid_argument);
  auto r = t->apply(msgs{{"wizard", "x"}});
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("wizard"), std::string::npos);
}

const std::filesystem::path shared_dir = std::filesystem::path{THAW_SOURCE_DIR} / ".." / "shared" / "tokenizers";

TEST(ChatTemplate, FromRealTokenizers) {
  if (!std::filesystem::exists(shared_dir / "qwen3" / "tokenizer.json"))
    GTEST_SKIP() << "no " << shared_dir.string();
  auto qwen = tokenizer::load(shared_dir / "qwen3" / "tokenizer.json");
  ASSERT_TRUE(qwen);
  auto t = chat_template::from_tokenizer(*qwen);
  ASSERT_TRUE(t) << t.err().to_string();
  EXPECT_EQ(t->family(), chat_family::chatml);
  msgs m{{"user", "Hello"}};
  const auto prompt = t->apply(m).value();
  EXPECT_EQ(prompt, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  // The special tokens in the rendered prompt encode to their ids.
  EXPECT_EQ(qwen->encode(prompt, true).value(),
            (std::vector<std::int32_t>{151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198}));
  // The shared Llama 2 tokenizer_config.json has no chat_template.
  auto llama = tokenizer::load(shared_dir / "llama2" / "tokenizer.json");
  ASSERT_TRUE(llama);
  auto lt = chat_template::from_tokenizer(*llama);
  ASSERT_FALSE(lt);
  EXPECT_EQ(lt.err().code, errc::not_found);
}

} // namespace
} // namespace thaw
