#include "bench/completion_stream.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace thaw::bench {
namespace {

std::string chunk(const std::string& text) {
  return "data: "
         "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\"" +
         text + "\",\"finish_reason\":null}]}\n\n";
}

const std::string usage =
    "data: "
    "{\"id\":\"cmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
    "\"total_tokens\":15}}\n\n";

TEST(CompletionStream, TimesEveryChunkAsItArrives) {
  // Sent at t = 10 s; chunks at 10.5, 10.6 (split across two reads, complete at 10.6), 10.9.
  completion_stream s(10.0);
  const std::string second = chunk(" world");
  s.on_bytes(chunk("hello"), 10.5);
  s.on_bytes(second.substr(0, 17), 10.55);
  s.on_bytes(second.substr(17), 10.6);
  s.on_bytes(chunk("!") + usage + "data: [D", 10.9);
  s.on_bytes("ONE]\n\n", 10.95);
  request_record rec;
  rec.prompt_tokens = 99;
  s.finish(200, "", rec);
  EXPECT_TRUE(rec.ok) << rec.error;
  EXPECT_NEAR(rec.ttft_s, 0.5, 1e-12);
  EXPECT_NEAR(rec.e2e_s, 0.9, 1e-12); // the last chunk with choices, not [DONE]
  ASSERT_EQ(rec.itl_s.size(), 2u);
  EXPECT_NEAR(rec.itl_s[0], 0.1, 1e-12);
  EXPECT_NEAR(rec.itl_s[1], 0.3, 1e-12);
  EXPECT_EQ(rec.output_tokens, 3);
  EXPECT_EQ(rec.prompt_tokens, 12); // the server's count replaces the requested length
}

TEST(CompletionStream, WithoutUsageCountsChunks) {
  completion_stream s(0);
  s.on_bytes(chunk("a") + chunk("b") + "data: [DONE]\n\n", 1);
  request_record rec;
  rec.prompt_tokens = 5;
  s.finish(200, "", rec);
  EXPECT_TRUE(rec.ok) << rec.error;
  EXPECT_EQ(rec.output_tokens, 2);
  EXPECT_EQ(rec.prompt_tokens, 5);
}

TEST(CompletionStream, HttpErrorsCarryTheServersMessage) {
  completion_stream s(0);
  s.on_bytes("{\"error\":{\"message\":\"model 'x' not found\",\"type\":\"not_found_error\"}}", 0.1);
  request_record rec;
  s.finish(404, "", rec);
  EXPECT_FALSE(rec.ok);
  EXPECT_EQ(rec.error, "HTTP 404: model 'x' not found");
}

TEST(CompletionStream, ErrorEventsAndCutStreamsFail) {
  {
    completion_stream s(0);
    s.on_bytes(chunk("a") + "data: {\"error\":{\"message\":\"engine overloaded\"}}\n\n"
                            "data: [DONE]\n\n",
               1);
    request_record rec;
    s.finish(200, "", rec);
    EXPECT_FALSE(rec.ok);
    EXPECT_NE(rec.error.find("engine overloaded"), std::string::npos) << rec.error;
  }
  {
    completion_stream s(0);
    s.on_bytes(chunk("a"), 1);
    request_record rec;
    s.finish(200, "", rec);
    EXPECT_FALSE(rec.ok);
    EXPECT_NE(rec.error.find("[DONE]"), std::string::npos) << rec.error;
  }
  {
    completion_stream s(0);
    request_record rec;
    s.finish(0, "127.0.0.1:1: connection refused", rec);
    EXPECT_FALSE(rec.ok);
    EXPECT_EQ(rec.error, "127.0.0.1:1: connection refused");
  }
}

} // namespace
} // namespace thaw::bench
