// Tests for fedpod/common/peer_text.h: a peer's text made valid UTF-8, printable and
// bounded.
#include "fedpod/common/peer_text.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace fedpod {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";

TEST(PeerTextTest, ValidUtf8NewlinesAndTabsAreKept) {
  const std::string text = "r\xC3\xA9sum\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\nline two\tcol";
  EXPECT_EQ(peer_text(text), text);
  EXPECT_EQ(peer_text(""), "");
}

TEST(PeerTextTest, EachByteOfAnInvalidSequenceBecomesOneReplacementCharacter) {
  // A lone continuation byte, a truncated sequence, an overlong '/', a surrogate,
  // a code point above U+10FFFF, bytes that never occur.
  EXPECT_EQ(peer_text("a\x80z"), "a" + kReplacement + "z");
  EXPECT_EQ(peer_text("a\xC3"), "a" + kReplacement);
  EXPECT_EQ(peer_text("\xC0\xAF"), kReplacement + kReplacement);
  EXPECT_EQ(peer_text("\xE0\x80\xAF"), kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(peer_text("\xED\xA0\x80"), kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(peer_text("\xF4\x90\x80\x80"), kReplacement + kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(peer_text("\xFE\xFF"), kReplacement + kReplacement);
  // The result is what a strict JSON writer accepts.
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_NO_THROW((void)nlohmann::json(peer_text(all + all)).dump());
}

TEST(PeerTextTest, ControlCharactersOtherThanNewlineAndTabAreReplaced) {
  EXPECT_EQ(peer_text("a\x1b[2Jb\rc\x7f" "d\x01"), "a?[2Jb?c?d?");
  EXPECT_EQ(peer_text("x\xC2\x85y\xC2\x9Bz\xC2\xA0"), "x?y?z\xC2\xA0");  // C1 controls; U+00A0 is printable
  EXPECT_EQ(peer_text(std::string("a\0b", 3)), "a?b");
}

TEST(PeerTextTest, LongTextIsCutAtACharacterBoundaryAndSaysHowMuch) {
  EXPECT_EQ(peer_text(std::string(10, 'x'), 4), "xxxx ... (6 bytes cut)");
  EXPECT_EQ(peer_text(std::string(4, 'x'), 4), "xxxx");
  // "é" is two bytes: it does not fit after three 'x' in four bytes, and is not split.
  EXPECT_EQ(peer_text("xxx\xC3\xA9yz", 4), "xxx ... (4 bytes cut)");
  // A replacement character counts its three bytes.
  EXPECT_EQ(peer_text("ab\xFF", 4), "ab ... (1 byte cut)");
  EXPECT_EQ(peer_text(std::string(100000, 'x')).size(), 4096 + std::string(" ... (95904 bytes cut)").size());
}

}  // namespace
}  // namespace fedpod
