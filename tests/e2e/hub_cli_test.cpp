// The hub's client commands as a modeller runs them, against a real `fedpod hub serve`.
#include <gtest/gtest.h>

#include <filesystem>
#include <sys/wait.h>

#include <csignal>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "fedpod/protocol/curve.h"
#include "reliability.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

constexpr const char* kKey = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";  // a CURVE public key (Z85)

struct CliRun {
  int code;
  std::string output;
};

class HubCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string port_file = (dir_.path() / "port").string();
    tls_ = testing::make_hub_tls((dir_.path() / "tls").string());
    hub_ = std::make_unique<testing::Process>(
        std::vector<std::string>{testing::fedpod_bin(), "hub", "serve", "--data-dir", (dir_.path() / "hub").string(),
                                 "--listen", "127.0.0.1:0", "--port-file", port_file, "--tls-cert", tls_.cert, "--tls-key", tls_.key},
        (dir_.path() / "hub.log").string());
    const std::string port = testing::wait_for_word(port_file, 60s);
    ASSERT_FALSE(port.empty()) << testing::read_file((dir_.path() / "hub.log").string());
    url_ = "https://127.0.0.1:" + port;
    setenv("FEDPOD_HUB_CA", tls_.ca.c_str(), 1);  // every CLI call verifies the hub's certificate
    // A TorchScript archive is a zip; the hub checks only that shape.
    artifact_ = dir_.write("net.pt", std::string("PK\x03\x04", 4) + std::string(64, 'x') +
                                         std::string("PK\x05\x06", 4) + std::string(18, '\0'));
    source_ = dir_.write("net.py", "class Net(torch.nn.Module): ...\n");
    setenv("HOME", dir_.path().c_str(), 1);  // the config file goes to this test's folder
    unsetenv("XDG_CONFIG_HOME");
    unsetenv("FEDPOD_HUB");
    unsetenv("FEDPOD_TOKEN");
  }

  CliRun fedpod(std::vector<std::string> args) {
    args.insert(args.begin(), testing::fedpod_bin());
    const std::string log = (dir_.path() / "cli.log").string();
    testing::Process p(args, log);
    const int status = p.wait(60s);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, testing::read_file(log)};
  }

  // NAME.key under the test's folder, made on first use: registration proves its secret.
  std::string key_file(const std::string& name) {
    const std::string base = (dir_.path() / ("keys-" + name)).string();
    if (!std::filesystem::exists(base + ".key")) {
      EXPECT_TRUE(protocol::write_key_files(base, protocol::generate_curve_keypair(), true).ok());
    }
    return base + ".key";
  }

  std::string register_alice() {
    auto r = fedpod({"user", "register", "alice", "--key-file", key_file("alice"), "--hub", url_, "--json"});
    EXPECT_EQ(r.code, 0) << r.output;
    return nlohmann::json::parse(r.output)["token"];
  }

  testing::TempDir dir_;
  testing::HubTls tls_;
  std::unique_ptr<testing::Process> hub_;
  std::string url_, artifact_, source_;
};

TEST_F(HubCliTest, PushListShowPull) {
  const std::string token = register_alice();
  ASSERT_EQ(token.size(), 64u);
  for (int version = 1; version <= 2; ++version) {
    auto r = fedpod({"model", "push", "alice/net", "--format", "torchscript", "--artifact", artifact_, "--source",
                     source_, "--description", "a test net", "--hub", url_, "--token", token});
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_CONTAINS(r.output, "pushed alice/net version " + std::to_string(version) + " (torchscript");
  }
  auto list = fedpod({"model", "list", "--hub", url_, "--token", token, "--json"});
  ASSERT_EQ(list.code, 0) << list.output;
  auto models = nlohmann::json::parse(list.output);
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0]["latest"]["version"], 2);

  auto show = fedpod({"model", "show", "alice/net", "--hub", url_, "--token", token});
  ASSERT_EQ(show.code, 0) << show.output;
  EXPECT_CONTAINS(show.output, "alice/net  (private)  a test net");

  const std::string out = (dir_.path() / "pulled.pt").string();
  auto pull = fedpod({"model", "pull", "alice/net:1", "-o", out, "--hub", url_, "--token", token});
  ASSERT_EQ(pull.code, 0) << pull.output;
  EXPECT_CONTAINS(pull.output, "verified");
  EXPECT_EQ(testing::read_file(out), testing::read_file(artifact_));

  // Private: an anonymous caller sees nothing.
  auto anon = fedpod({"model", "show", "alice/net", "--hub", url_});
  EXPECT_EQ(anon.code, 1);
  EXPECT_CONTAINS(anon.output, "not_found");
}

TEST_F(HubCliTest, ErrorsNameTheProblem) {
  const std::string token = register_alice();
  auto wrong = fedpod({"model", "push", "alice/net", "--format", "torchscript", "--artifact", artifact_, "--hub",
                       url_, "--token", std::string(64, '0')});
  EXPECT_EQ(wrong.code, 1);
  EXPECT_CONTAINS(wrong.output, "model push: permission_denied");

  auto other = fedpod({"model", "push", "bob/net", "--format", "torchscript", "--artifact", artifact_, "--hub",
                       url_, "--token", token});
  EXPECT_EQ(other.code, 1);
  EXPECT_CONTAINS(other.output, "permission_denied");

  auto plugin = fedpod({"model", "push", "alice/net", "--format", "plugin", "--artifact", artifact_, "--hub", url_,
                        "--token", token});
  EXPECT_EQ(plugin.code, 1);
  EXPECT_CONTAINS(plugin.output, "ELF");

  auto no_hub = fedpod({"model", "list"});
  EXPECT_EQ(no_hub.code, 2);
  EXPECT_CONTAINS(no_hub.output, "no hub given");

  auto bad_name = fedpod({"model", "pull", "alice", "-o", "x", "--hub", url_});
  EXPECT_EQ(bad_name.code, 2);
  EXPECT_CONTAINS(bad_name.output, "expected USER/REF[:VERSION]");

  auto dup = fedpod({"user", "register", "alice", "--key-file", key_file("alice"), "--hub", url_});
  EXPECT_EQ(dup.code, 1);
  EXPECT_CONTAINS(dup.output, "user register");
  // A public key alone registers nobody: the CLI asks for the key pair.
  auto public_only = fedpod({"user", "register", "dave", "--public-key", kKey, "--hub", url_});
  EXPECT_EQ(public_only.code, 2);
  EXPECT_CONTAINS(public_only.output, "registration proves you hold the secret key: give --key-file");
}

TEST_F(HubCliTest, SavedConfigAndEnvironment) {
  unsetenv("FEDPOD_HUB_CA");  // the CA comes from --hub-ca, then from the saved config
  auto r = fedpod({"user", "register", "carol", "--key-file", key_file("carol"), "--hub", url_, "--hub-ca", tls_.ca,
                   "--save"});
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string cfg = (dir_.path() / ".config" / "fedpod" / "config.yaml").string();
  EXPECT_CONTAINS(testing::read_file(cfg), "hub: " + url_);
  EXPECT_CONTAINS(testing::read_file(cfg), "hub_ca: " + tls_.ca);
  // No --hub, no --token: both come from the saved config.
  auto push = fedpod({"model", "push", "carol/m", "--format", "torchscript", "--artifact", artifact_});
  ASSERT_EQ(push.code, 0) << push.output;
  auto pod = fedpod({"pod", "register", "pod-x", "--address", "tcp://10.0.0.5:5555", "--public-key", kKey});
  ASSERT_EQ(pod.code, 0) << pod.output;
  auto pods = fedpod({"pod", "list", "--json"});
  ASSERT_EQ(pods.code, 0) << pods.output;
  auto list = nlohmann::json::parse(pods.output);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["owner"], "carol");
  // The environment wins over the config file.
  setenv("FEDPOD_HUB", "http://127.0.0.1:1", 1);
  auto env = fedpod({"pod", "list"});
  EXPECT_EQ(env.code, 1);
  EXPECT_CONTAINS(env.output, "pod list: unavailable");
}

// A hub on the network is spoken to over TLS, and only a hub whose certificate the
// client's CA vouches for, for the name the client dialled, is believed: a
// man in the middle with a certificate of its own (another CA, or the right CA's
// certificate for another name) gets no request, and so no token.
TEST_F(HubCliTest, TlsBelievesOnlyTheHubsCertificate) {
  const std::string token = register_alice();
  auto ok = fedpod({"model", "list", "--hub", url_, "--token", token});
  EXPECT_EQ(ok.code, 0) << ok.output;

  // No CA given: the system store does not know the development CA.
  unsetenv("FEDPOD_HUB_CA");
  auto no_ca = fedpod({"model", "list", "--hub", url_, "--token", token});
  EXPECT_EQ(no_ca.code, 1);
  EXPECT_CONTAINS(no_ca.output, "the hub's TLS certificate is not trusted");

  // An attacker's CA, and an attacker's hub certificate from it for the same names.
  const auto evil = testing::make_hub_tls((dir_.path() / "evil").string());
  auto other_ca = fedpod({"model", "list", "--hub", url_, "--token", token, "--hub-ca", evil.ca});
  EXPECT_EQ(other_ca.code, 1);
  EXPECT_CONTAINS(other_ca.output, "not trusted");
  {
    const std::string port_file = (dir_.path() / "evil-port").string();
    testing::Process mitm({testing::fedpod_bin(), "hub", "serve", "--data-dir", (dir_.path() / "evil-hub").string(),
                           "--listen", "127.0.0.1:0", "--port-file", port_file, "--tls-cert", evil.cert, "--tls-key",
                           evil.key},
                          (dir_.path() / "evil-hub.log").string());
    const std::string port = testing::wait_for_word(port_file, 60s);
    ASSERT_FALSE(port.empty());
    auto fooled = fedpod({"model", "list", "--hub", "https://127.0.0.1:" + port, "--token", token, "--hub-ca", tls_.ca});
    EXPECT_EQ(fooled.code, 1);
    EXPECT_CONTAINS(fooled.output, "not trusted");
    mitm.kill(SIGTERM);
    mitm.wait(30s);
  }

  // The right CA, a certificate for another name: refused for 127.0.0.1.
  {
    const std::string other_dir = (dir_.path() / "other-name").string();
    std::filesystem::create_directories(other_dir);
    std::filesystem::copy_file(tls_.ca, other_dir + "/ca.crt");
    std::filesystem::copy_file(dir_.path() / "tls" / "ca.key", other_dir + "/ca.key");
    auto issued = fedpod({"tls", "dev-ca", "--out", other_dir, "--name", "hub.example.org"});
    ASSERT_EQ(issued.code, 0) << issued.output;
    EXPECT_CONTAINS(issued.output, "reused CA");
    const std::string port_file = (dir_.path() / "named-port").string();
    testing::Process named({testing::fedpod_bin(), "hub", "serve", "--data-dir", (dir_.path() / "named").string(),
                            "--listen", "127.0.0.1:0", "--port-file", port_file, "--tls-cert",
                            other_dir + "/hub.crt", "--tls-key", other_dir + "/hub.key"},
                           (dir_.path() / "named.log").string());
    const std::string port = testing::wait_for_word(port_file, 60s);
    ASSERT_FALSE(port.empty());
    auto wrong_name = fedpod({"model", "list", "--hub", "https://127.0.0.1:" + port, "--hub-ca", tls_.ca});
    EXPECT_EQ(wrong_name.code, 1);
    EXPECT_CONTAINS(wrong_name.output, "not trusted");
    named.kill(SIGTERM);
    named.wait(30s);
  }

  // Plain HTTP: to the TLS hub it gets nowhere; to a hub beyond loopback it is not
  // even tried without the loudly named override.
  auto plain = fedpod({"model", "list", "--hub", "http://127.0.0.1:" + url_.substr(url_.rfind(':') + 1)});
  EXPECT_EQ(plain.code, 1);
  EXPECT_CONTAINS(plain.output, "needs an https:// URL");
  auto remote = fedpod({"model", "list", "--hub", "http://192.0.2.1:8470", "--token", token});
  EXPECT_EQ(remote.code, 2);
  EXPECT_CONTAINS(remote.output, "plain http:// is refused for a hub that is not on loopback");
  EXPECT_CONTAINS(remote.output, "FEDPOD_INSECURE_PLAINTEXT_HUB=1");

  // The hub itself refuses to serve plain HTTP beyond loopback unless told loudly.
  auto serve = fedpod({"hub", "serve", "--data-dir", (dir_.path() / "plain").string(), "--listen", "0.0.0.0:0"});
  EXPECT_EQ(serve.code, 2);
  EXPECT_CONTAINS(serve.output, "--insecure-plaintext");
  auto bad_key = fedpod({"hub", "serve", "--data-dir", (dir_.path() / "plain").string(), "--listen", "127.0.0.1:0",
                         "--tls-cert", tls_.cert, "--tls-key", evil.key});
  EXPECT_EQ(bad_key.code, 2);
  EXPECT_CONTAINS(bad_key.output, "the key does not match the certificate");
  testing::record_fault("hub", "a client reaches an impostor or unverifiable hub (no CA, another CA, an impostor "
                        "hub with its own certificate, the right CA for another name)", 4,
                        "every call refused before a request was sent: the certificate is not trusted");
}

}  // namespace
}  // namespace fedpod
