#include "runtime/engine/stop_matcher.hpp"

#include <gtest/gtest.h>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace thaw {
namespace {

/// Everything a stream of pushes releases, then a flush unless stopped.
struct stream_out {
  std::string text;
  bool stopped = false;
  std::string matched;
};

stream_out run(stop_matcher& m, const std::vector<std::string>& pieces) {
  stream_out out;
  for (const auto& p : pieces) {
    auto r = m.push(p);
    out.text += r.text;
    if (r.stopped) {
      out.stopped = true;
      out.matched = r.matched;
    }
  }
  if (!out.stopped)
    out.text += m.flush();
  return out;
}

TEST(StopMatcher, NoStopsPassesThroughHoldingNothing) {
  stop_matcher m{{}};
  auto r = m.push("Hello");
  EXPECT_EQ(r.text, "Hello");
  EXPECT_FALSE(r.stopped);
  EXPECT_TRUE(m.pending().empty());
  stop_matcher only_empty{{"", ""}};
  EXPECT_EQ(only_empty.push("abc").text, "abc");
  EXPECT_TRUE(only_empty.stops().empty());
}

TEST(StopMatcher, StopSplitAcrossPushesIsNeverEmitted) {
  stop_matcher m{{"</end>"}};
  auto a = m.push("The answer is 4</");
  EXPECT_EQ(a.text, "The answer is 4");
  EXPECT_EQ(m.pending(), "</");
  auto b = m.push("en");
  EXPECT_EQ(b.text, "");
  EXPECT_EQ(m.pending(), "</en");
  auto c = m.push("d> and more");
  EXPECT_EQ(c.text, "");
  EXPECT_TRUE(c.stopped);
  EXPECT_EQ(c.matched, "</end>");
  EXPECT_TRUE(m.stopped());
  // Stopped: nothing more comes out.
  EXPECT_EQ(m.push("again").text, "");
  EXPECT_FALSE(m.push("x").stopped); // reported once
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, FalseStartIsReleased) {
  stop_matcher m{{"Help!"}};
  EXPECT_EQ(m.push("Hel").text, "");
  EXPECT_EQ(m.pending(), "Hel");
  auto r = m.push("p");
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(m.pending(), "Help");
  r = m.push(" me");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.text, "Help me");
  EXPECT_TRUE(m.pending().empty());
  stop_matcher both{{"Help!", "Help me"}};
  const auto o = run(both, {"Hel", "p", " me", " now"});
  EXPECT_TRUE(o.stopped);
  EXPECT_EQ(o.matched, "Help me");
  EXPECT_EQ(o.text, "");
  stop_matcher bang{{"Help!"}};
  const auto q = run(bang, {"Hel", "p", "!"});
  EXPECT_EQ(q.matched, "Help!");
  // A false start whose tail is itself a new start keeps only that tail.
  stop_matcher n{{"abab!"}};
  EXPECT_EQ(n.push("abab").text, "");
  auto s = n.push("ab");
  EXPECT_EQ(s.text, "ab");
  EXPECT_EQ(n.pending(), "abab");
  auto t = n.push("!");
  EXPECT_TRUE(t.stopped);
  EXPECT_EQ(t.text, "");
}

TEST(StopMatcher, HoldsOnlyTheLongestSuffixThatCouldStillMatch) {
  stop_matcher m{{"xyz", "Hello"}};
  EXPECT_EQ(m.push("aHell").text, "a");
  EXPECT_EQ(m.pending(), "Hell");
  EXPECT_EQ(m.push("o!").text, "");
  EXPECT_TRUE(m.stopped());
  stop_matcher k{{"xyz"}};
  EXPECT_EQ(k.push("wxy w").text, "wxy w");
  EXPECT_EQ(k.push("x").text, "");
  EXPECT_EQ(k.flush(), "x");
  EXPECT_TRUE(k.pending().empty());
}

TEST(StopMatcher, StopAtTheVeryStart) {
  stop_matcher m{{"###"}};
  auto r = m.push("### tail");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.matched, "###");
}

TEST(StopMatcher, EarliestEndingStopWinsThenTheLonger) {
  // "bc" completes before "abcd" does: a streaming reader sees it first.
  stop_matcher m{{"abcd", "bc"}};
  auto r = m.push("xabcd");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.matched, "bc");
  EXPECT_EQ(r.text, "xa");
  // Same end: the longer one (it starts first).
  stop_matcher n{{"c", "abc"}};
  auto s = n.push("xxabc");
  EXPECT_EQ(s.matched, "abc");
  EXPECT_EQ(s.text, "xx");
  // Multiple stops, the later one in the list occurs first.
  stop_matcher o{{"STOP", "\n\n"}};
  auto t = o.push("line one\n\nSTOP");
  EXPECT_EQ(t.matched, "\n\n");
  EXPECT_EQ(t.text, "line one");
}

TEST(StopMatcher, MultibyteStopStrings) {
  stop_matcher m{{"終わり", "é!"}};
  // Pieces are whole code points; the stop spans three of them.
  EXPECT_EQ(m.push("これで").text, "これで");
  EXPECT_EQ(m.push("終").text, "");
  EXPECT_EQ(m.push("わ").text, "");
  auto r = m.push("り。");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.matched, "終わり");
  EXPECT_EQ(r.text, "");
  stop_matcher n{{"é!"}};
  EXPECT_EQ(n.push("café").text, "caf");
  EXPECT_EQ(n.push("?").text, "é?");
}

TEST(StopMatcher, FlushReleasesHeldText) {
  stop_matcher m{{"<|im_end|>"}};
  EXPECT_EQ(m.push("done<|im").text, "done");
  EXPECT_EQ(m.flush(), "<|im");
  EXPECT_TRUE(m.pending().empty());
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, ValidateRejectsTooManyOrBadUtf8) {
  EXPECT_TRUE(stop_matcher::validate({"a", "é", "終わり", "🙂"}));
  std::vector<std::string> many(stop_matcher::max_stops + 1, "x");
  auto v = stop_matcher::validate(many);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.err().code, errc::invalid_argument);
  EXPECT_NE(v.err().message.find("17 stop strings"), std::string::npos) << v.err().message;
  many.pop_back();
  EXPECT_TRUE(stop_matcher::validate(many));
  for (std::string bad : {std::string{"\xC3"}, std::string{"ok\xFF"}, std::string{"\xC0\xAF"},
                          std::string{"\xED\xA0\x80"}}) {
    auto b = stop_matcher::validate({"fine", bad});
    ASSERT_FALSE(b);
    EXPECT_NE(b.err().message.find("stop string 1"), std::string::npos) << b.err().message;
  }
}

/// The answer from the whole text at once: cut before the earliest-ending occurrence (on a tie,
/// the longer stop).
stream_out whole_text_answer(const std::string& text, const std::vector<std::string>& stops) {
  for (std::size_t end = 1; end <= text.size(); ++end) {
    const std::string* best = nullptr;
    for (const auto& s : stops)
      if (!s.empty() && s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0 &&
          (best == nullptr || s.size() > best->size()))
        best = &s;
    if (best != nullptr)
      return {text.substr(0, end - best->size()), true, *best};
  }
  return {text, false, {}};
}

/// Longest suffix of `text` that is a proper prefix of a stop, by brute force.
std::size_t expected_hold(const std::string& text, const std::vector<std::string>& stops) {
  std::size_t best = 0;
  for (std::size_t len = 1; len <= text.size(); ++len)
    for (const auto& s : stops)
      if (len < s.size() && s.compare(0, len, text, text.size() - len, len) == 0)
        best = len;
  return best;
}

TEST(StopMatcher, RandomSplitsAndRestoreMatchTheWholeTextAnswer) {
  // Small alphabets so stops and near-misses occur often; multibyte code points included.
  const std::vector<std::string> alphabet{"a", "b", "c", "é", "終", " "};
  std::mt19937 gen{7};
  auto pick = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>{0, n - 1}(gen);
  };
  int stopped_cases = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> stops;
    const auto n_stops = 1 + pick(3);
    for (std::size_t i = 0; i < n_stops; ++i) {
      std::string s;
      const auto len = 1 + pick(4);
      for (std::size_t k = 0; k < len; ++k)
        s += alphabet[pick(alphabet.size())];
      stops.push_back(s);
    }
    std::vector<std::string> points;
    const auto text_len = pick(30);
    for (std::size_t i = 0; i < text_len; ++i)
      points.push_back(alphabet[pick(alphabet.size())]);
    // Split into pieces of whole code points, some empty.
    std::vector<std::string> pieces;
    std::string full;
    for (std::size_t i = 0; i < points.size();) {
      const auto take = std::min(points.size() - i, pick(4));
      std::string piece;
      for (std::size_t k = 0; k < take; ++k)
        piece += points[i + k];
      i += take;
      full += piece;
      pieces.push_back(piece);
    }
    const auto want = whole_text_answer(full, stops);
    if (want.stopped)
      ++stopped_cases;

    // Uninterrupted, checking the hold after every push.
    stop_matcher m{stops};
    stream_out got;
    std::string seen;
    for (const auto& p : pieces) {
      auto r = m.push(p);
      seen += p;
      got.text += r.text;
      if (r.stopped) {
        got.stopped = true;
        got.matched = r.matched;
        break;
      }
      ASSERT_EQ(m.pending().size(), expected_hold(seen, stops)) << "'" << seen << "'";
      ASSERT_EQ(got.text + m.pending(), seen);
    }
    if (!got.stopped)
      got.text += m.flush();
    ASSERT_EQ(got.text, want.text) << "'" << full << "'";
    ASSERT_EQ(got.stopped, want.stopped) << "'" << full << "'";
    ASSERT_EQ(got.matched, want.matched) << "'" << full << "'";

    // Interrupted after a random push: export (pending, stopped), import into a fresh matcher.
    const auto cut = pick(pieces.size() + 1);
    stop_matcher first{stops};
    stream_out resumed;
    for (std::size_t i = 0; i < cut; ++i) {
      auto r = first.push(pieces[i]);
      resumed.text += r.text;
      if (r.stopped) {
        resumed.stopped = true;
        resumed.matched = r.matched;
      }
    }
    stop_matcher second{stops};
    second.restore(first.pending(), first.stopped());
    for (std::size_t i = cut; i < pieces.size(); ++i) {
      auto r = second.push(pieces[i]);
      resumed.text += r.text;
      if (r.stopped) {
        resumed.stopped = true;
        resumed.matched = r.matched;
      }
    }
    if (!resumed.stopped)
      resumed.text += second.flush();
    ASSERT_EQ(resumed.text, want.text) << "cut " << cut << " '" << full << "'";
    ASSERT_EQ(resumed.stopped, want.stopped);
    ASSERT_EQ(resumed.matched, want.matched);
  }
  EXPECT_GT(stopped_cases, 200); // the property was exercised both ways
  EXPECT_LT(stopped_cases, 1900);
}

} // namespace
} // namespace thaw
