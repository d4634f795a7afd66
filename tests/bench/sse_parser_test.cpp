#include "bench/sse_parser.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace thaw::bench {
namespace {

std::vector<std::string> parse_in_pieces(const std::string& stream, std::size_t piece) {
  sse_parser p;
  std::vector<std::string> events;
  for (std::size_t i = 0; i < stream.size(); i += piece)
    p.feed(std::string_view(stream).substr(i, piece),
           [&](std::string_view data) { events.emplace_back(data); });
  EXPECT_FALSE(p.pending());
  return events;
}

TEST(SseParser, EventsSplitAtEveryByteBoundary) {
  const std::string stream =
      "data: {\"choices\":[{\"text\":\" a\"}]}\n\n"
      ": keep-alive comment\n\n"
      "data: {\"choices\":[{\"text\":\"b\\n\"}]}\r\n\r\n"
      "event: message\nid: 7\ndata: {\"usage\":{\"completion_tokens\":2}}\n\n"
      "data: [DONE]\n\n";
  const std::vector<std::string> want = {"{\"choices\":[{\"text\":\" a\"}]}",
                                         "{\"choices\":[{\"text\":\"b\\n\"}]}",
                                         "{\"usage\":{\"completion_tokens\":2}}", "[DONE]"};
  for (std::size_t piece = 1; piece <= stream.size(); ++piece)
    ASSERT_EQ(parse_in_pieces(stream, piece), want) << "pieces of " << piece << " bytes";
}

TEST(SseParser, SplitsAtEachSingleBoundary) {
  const std::string stream = "data: one\n\ndata: two\n\n";
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    sse_parser p;
    std::vector<std::string> events;
    const auto on = [&](std::string_view d) { events.emplace_back(d); };
    p.feed(std::string_view(stream).substr(0, cut), on);
    p.feed(std::string_view(stream).substr(cut), on);
    ASSERT_EQ(events, (std::vector<std::string>{"one", "two"})) << "cut at " << cut;
  }
}

TEST(SseParser, JoinsDataLinesAndSkipsEventsWithoutData) {
  EXPECT_EQ(parse_in_pieces("data: a\ndata:b\ndata\n\nevent: x\n\n", 3),
            (std::vector<std::string>{"a\nb\n"}));
}

TEST(SseParser, AnUnfinishedEventIsPendingNotDispatched) {
  sse_parser p;
  int events = 0;
  p.feed("data: {\"choices\":[]}\n", [&](std::string_view) { ++events; });
  EXPECT_EQ(events, 0);
  EXPECT_TRUE(p.pending());
  p.feed("\n", [&](std::string_view) { ++events; });
  EXPECT_EQ(events, 1);
  EXPECT_FALSE(p.pending());
}

} // namespace
} // namespace thaw::bench
