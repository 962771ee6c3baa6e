// parse_hub_url: the one rule every hub client applies (TLS unless on loopback).
#include "fedpod/common/hub_url.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "fedpod/common/config_util.h"

namespace fedpod {
namespace {

std::string error_of(const std::string& url) {
  try {
    parse_hub_url(url, "job.yaml: hub");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

class HubUrlTest : public ::testing::Test {
 protected:
  void SetUp() override { ::unsetenv("FEDPOD_INSECURE_PLAINTEXT_HUB"); }
  void TearDown() override { ::unsetenv("FEDPOD_INSECURE_PLAINTEXT_HUB"); }
};

TEST_F(HubUrlTest, HttpsIsTheDefaultAndPortsDefaultByScheme) {
  HubUrl a = parse_hub_url("https://hub.example.org", "x");
  EXPECT_TRUE(a.tls);
  EXPECT_EQ(a.host, "hub.example.org");
  EXPECT_EQ(a.port, 443);
  HubUrl b = parse_hub_url("hub.example.org:8470/", "x");  // no scheme: https
  EXPECT_TRUE(b.tls);
  EXPECT_EQ(b.port, 8470);
  EXPECT_EQ(b.to_string(), "https://hub.example.org:8470");
  HubUrl c = parse_hub_url("http://127.0.0.1", "x");
  EXPECT_FALSE(c.tls);
  EXPECT_EQ(c.port, 80);
  HubUrl d = parse_hub_url("https://[2001:db8::1]:9000", "x");
  EXPECT_EQ(d.host, "2001:db8::1");
  EXPECT_EQ(d.port, 9000);
  EXPECT_EQ(d.to_string(), "https://[2001:db8::1]:9000");
}

TEST_F(HubUrlTest, PlainHttpOnlyOnLoopbackUnlessLoudlyAllowed) {
  for (const char* ok : {"http://127.0.0.1:8470", "http://127.3.4.5:1", "http://localhost:8470", "http://[::1]:8470"}) {
    EXPECT_EQ(error_of(ok), "") << ok;
  }
  for (const char* bad : {"http://10.0.0.5:8470", "http://hub:8470", "http://128.0.0.1", "http://[::2]:1",
                          "http://localhost.evil.example:80", "http://127.0.0.1.nip.io"}) {
    const std::string e = error_of(bad);
    EXPECT_NE(e.find("plain http:// is refused for a hub that is not on loopback"), std::string::npos) << bad << e;
    EXPECT_EQ(e.rfind("job.yaml: hub: ", 0), 0u) << e;
  }
  ::setenv("FEDPOD_INSECURE_PLAINTEXT_HUB", "yes", 1);  // only "1" counts
  EXPECT_NE(error_of("http://10.0.0.5:8470"), "");
  ::setenv("FEDPOD_INSECURE_PLAINTEXT_HUB", "1", 1);
  EXPECT_EQ(error_of("http://10.0.0.5:8470"), "");
}

TEST_F(HubUrlTest, MalformedAddressesNameTheProblem) {
  for (const char* bad : {"", "https://", "https://hub/api", "ftp://hub:1", "https://user@hub:1", "https://hub:0",
                          "https://hub:65536", "https://hub:x", "https://hub:", "https://[::1", "https://::1:80",
                          "https://hub:1?x", "https://h ub:1"}) {
    EXPECT_NE(error_of(bad), "") << "accepted: '" << bad << "'";
  }
  EXPECT_NE(error_of("https://hub:99999").find("bad port '99999'"), std::string::npos);
  EXPECT_NE(error_of("ftp://hub:1").find("the scheme must be https://"), std::string::npos);
}

}  // namespace
}  // namespace fedpod
