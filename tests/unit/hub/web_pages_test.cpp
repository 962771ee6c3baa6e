// The hub web pages' building blocks: every embedded template parses and renders,
// values are HTML-escaped, and version diffs match a diff worked out by hand.
// (The pages themselves, in a real browser against a real hub: tests/e2e/hub_web_test.py.)
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "web.h"

namespace fedpod::hub::detail {
namespace {

using json = nlohmann::json;

TEST(WebPagesTest, EveryTemplateParsesAndRendersWithoutData) {
  int templates = 0;
  for (const auto& name : web_asset_names()) {
    if (name.size() < 9 || name.substr(name.size() - 9) != ".mustache") continue;
    ++templates;
    EXPECT_NO_THROW(render_template(name, json::object())) << name;
  }
  EXPECT_GE(templates, 13);
  EXPECT_FALSE(web_asset("hub.css").empty());
  EXPECT_TRUE(web_asset("nope.css").empty());
  EXPECT_THROW(render_template("missing.mustache", json::object()), std::runtime_error);
}

TEST(WebPagesTest, EveryValueIsEscaped) {
  const std::string hostile = R"(<script>alert("x")</script> & 'q' <img src=x onerror=alert(1)>)";
  const std::string page = render_template("error.mustache", {{"status", 400}, {"message", hostile}});
  EXPECT_EQ(page.find("<script>"), std::string::npos) << page;
  EXPECT_EQ(page.find("<img"), std::string::npos) << page;
  EXPECT_NE(page.find("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &apos;q&apos; "
                      "&lt;img src=x onerror=alert(1)&gt;"),
            std::string::npos)
      << page;
  // Inside attributes too (a purpose travels in a hidden field of the confirmation).
  const std::string form = render_template(
      "request_confirm.mustache", {{"user", "a"}, {"ref", "b"}, {"purpose", "\"><script>x</script>"}});
  EXPECT_EQ(form.find("<script>"), std::string::npos);
  EXPECT_NE(form.find(R"(name="purpose" value="&quot;&gt;&lt;script&gt;x&lt;/script&gt;")"), std::string::npos)
      << form;
}

TEST(WebPagesTest, DiffOfTwoVersionsMatchesTheHandWrittenOne) {
  const Files before = {{"a.py", "l1\nl2\nl3\n"}, {"gone.txt", "x\n"}, {"same.txt", "s\n"}};
  const Files after = {{"a.py", "l1\nL2\nl3\nl4\n"}, {"new.txt", "y\n"}, {"same.txt", "s\n"}};
  const json d = diff_sources(before, after);
  ASSERT_EQ(d.size(), 4u);  // by name
  EXPECT_EQ(d[0]["name"], "a.py");
  EXPECT_EQ(d[0]["status"], "changed");
  ASSERT_EQ(d[0]["hunks"].size(), 1u);
  EXPECT_EQ(d[0]["hunks"][0]["header"], "@@ -1,3 +1,4 @@");
  json lines = json::array();
  for (const auto& l : d[0]["hunks"][0]["lines"]) lines.push_back({l["kind"], l["old"], l["new"], l["text"]});
  EXPECT_EQ(lines, json::parse(R"([["ctx", "1", "1", "l1"],
                                   ["del", "2", "",  "l2"],
                                   ["add", "",  "2", "L2"],
                                   ["ctx", "3", "3", "l3"],
                                   ["add", "",  "4", "l4"]])"))
      << lines.dump();
  EXPECT_EQ(d[1]["name"], "gone.txt");
  EXPECT_EQ(d[1]["status"], "removed");
  EXPECT_EQ(d[1]["hunks"][0]["lines"][0]["kind"], "del");
  EXPECT_EQ(d[2]["name"], "new.txt");
  EXPECT_EQ(d[2]["status"], "added");
  EXPECT_EQ(d[2]["hunks"][0]["lines"][0]["text"], "y");
  EXPECT_EQ(d[3]["name"], "same.txt");
  EXPECT_EQ(d[3]["status"], "unchanged");
  EXPECT_TRUE(d[3]["hunks"].empty());
}

TEST(WebPagesTest, FarApartChangesMakeSeparateHunksWithThreeLinesOfContext) {
  std::string a, b;
  for (int i = 1; i <= 20; ++i) {
    a += "line " + std::to_string(i) + "\n";
    b += (i == 2 ? std::string("changed 2") : i == 18 ? std::string("changed 18") : "line " + std::to_string(i)) + "\n";
  }
  const json d = diff_sources({{"f", a}}, {{"f", b}});
  ASSERT_EQ(d[0]["hunks"].size(), 2u) << d.dump();
  EXPECT_EQ(d[0]["hunks"][0]["header"], "@@ -1,5 +1,5 @@");
  EXPECT_EQ(d[0]["hunks"][1]["header"], "@@ -15,6 +15,6 @@");
}

}  // namespace
}  // namespace fedpod::hub::detail
