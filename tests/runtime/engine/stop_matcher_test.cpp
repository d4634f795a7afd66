#include "runtime/engine/stop_matcher.hpp"

#include <gtest/gtest.h>

#include <random>

namespace thaw {
namespace {

/// Feeds `pieces` and returns the emitted text and whether a stop matched.
std::pair<std::string, bool> run(stop_matcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) {
    auto r = m.push(p);
    out += r.text;
    if (r.stopped)
      return {out, true};
  }
  return {out + m.flush(), false};
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
  stop_matcher m({});
  auto r = m.push("Hello");
  EXPECT_EQ(r.text, "Hello");
  EXPECT_TRUE(m.pending().empty());
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopSplitAcrossPiecesIsCutAndNeverEmitted) {
  stop_matcher m({"###"});
  auto a = m.push("answer #");
  EXPECT_EQ(a.text, "answer ");
  EXPECT_EQ(m.pending(), "#");
  auto b = m.push("#");
  EXPECT_EQ(b.text, "");
  auto c = m.push("# tail");
  EXPECT_TRUE(c.stopped);
  EXPECT_EQ(c.matched, "###");
  EXPECT_EQ(c.text, "");
  EXPECT_TRUE(m.push("more").text.empty()); // nothing after a stop
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, FalseStartIsReleased) {
  stop_matcher m({"Help!"});
  EXPECT_EQ(m.push("Hel").text, "");
  auto r = m.push("p me");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.text, "Help me");
  EXPECT_TRUE(m.pending().empty());
}

TEST(StopMatcher, HoldsOnlyTheLongestSuffixThatCanStillMatch) {
  stop_matcher m({"aab"});
  EXPECT_EQ(m.push("xaa").text, "x");
  EXPECT_EQ(m.pending(), "aa");
  EXPECT_EQ(m.push("a").text, "a"); // "aaa": only the last "aa" can still become "aab"
  EXPECT_EQ(m.pending(), "aa");
  auto s = m.push("b");
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "");
}

TEST(StopMatcher, EarliestStopWinsAndStopAtTheStart) {
  stop_matcher m({"world", "lo w"});
  auto r = m.push("Hello world");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.matched, "lo w");
  EXPECT_EQ(r.text, "Hel");
  stop_matcher n({"", "Q:"});
  auto s = n.push("Q: what");
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "");
}

TEST(StopMatcher, MultibyteStopStrings) {
  stop_matcher m({"。\n"});
  EXPECT_EQ(m.push("你好").text, "你好");
  EXPECT_EQ(m.push("。").text, "");
  auto r = m.push("\n再见");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
}

TEST(StopMatcher, FlushReleasesHeldText) {
  stop_matcher m({"</end>"});
  EXPECT_EQ(m.push("done </e").text, "done ");
  EXPECT_EQ(m.flush(), "</e");
}

TEST(StopMatcher, RestoredMatcherContinuesAsTheUninterruptedOne) {
  const std::string text = "one two <stop three four <sto five <stop> six";
  const std::vector<std::string> stops{"<stop>", "four <x"};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::string> pieces;
    for (std::size_t at = 0; at < text.size();) {
      std::size_t n = 1 + rng() % 4;
      pieces.push_back(text.substr(at, n));
      at += n;
    }
    stop_matcher whole(stops);
    auto expect = run(whole, pieces);
    ASSERT_EQ(expect.first, "one two <stop three four <sto five ");
    ASSERT_TRUE(expect.second);

    const std::size_t cut = rng() % pieces.size();
    stop_matcher first(stops);
    std::string out;
    for (std::size_t i = 0; i < cut; ++i)
      out += first.push(pieces[i]).text;
    stop_matcher second(stops);
    second.restore(first.pending(), first.stopped());
    auto rest = run(second, {pieces.begin() + static_cast<std::ptrdiff_t>(cut), pieces.end()});
    EXPECT_EQ(out + rest.first, expect.first) << "cut at piece " << cut;
    EXPECT_TRUE(first.stopped() || rest.second);
  }
}

} // namespace
} // namespace thaw
