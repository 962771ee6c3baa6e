// fedpod::TempDir: a private directory removed by its owner, and by the next owner
// of the same prefix once a killed process has left it behind. Real directories in
// a TMPDIR of the test's own; real processes killed with SIGKILL.
#include "fedpod/common/temp_dir.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <utility>

#include "testutil.h"

namespace fedpod {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kPrefix = "fedpod-test-dir-";

// Points TMPDIR at a directory of the test's own for as long as it lives.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* old = std::getenv("TMPDIR")) old_tmpdir_ = old;
    ::setenv("TMPDIR", root_.path().c_str(), 1);
  }
  void TearDown() override {
    if (old_tmpdir_) ::setenv("TMPDIR", old_tmpdir_->c_str(), 1);
    else ::unsetenv("TMPDIR");
  }

  std::set<std::string> dirs() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(root_.path())) out.insert(e.path().string());
    return out;
  }

  // A child process that made a directory and waits (until killed): its pid and the
  // directory.
  std::pair<pid_t, std::string> forked_owner() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      auto dir = TempDir::create(kPrefix);
      const std::string path = dir.ok() ? dir->path() + "\n" : "\n";
      if (::write(fds[1], path.data(), path.size()) < 0) ::_exit(1);
      for (;;) ::pause();
    }
    ::close(fds[1]);
    std::string path;
    char c;
    while (::read(fds[0], &c, 1) == 1 && c != '\n') path.push_back(c);
    ::close(fds[0]);
    return {pid, path};
  }

  // A directory made by a process that was then killed with SIGKILL (no destructor
  // ran): its path.
  std::string killed_owners_dir() {
    auto [pid, path] = forked_owner();
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status));
    return path;
  }

  static void age(const std::string& path, std::chrono::minutes by) {
    fs::last_write_time(path, fs::file_time_type::clock::now() - by);
  }

  testing::TempDir root_;
  std::optional<std::string> old_tmpdir_;
};

TEST_F(TempDirTest, APrivateDirectoryUnderTmpdirGoneWithItsContentsWhenItsOwnerIsDestroyed) {
  std::string path;
  {
    auto dir = TempDir::create(kPrefix);
    ASSERT_TRUE(dir.ok()) << dir.status().message();
    path = dir->path();
    EXPECT_EQ(fs::path(path).parent_path(), root_.path());
    EXPECT_EQ(fs::path(path).filename().string().rfind(kPrefix, 0), 0u);
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    std::ofstream(path + "/socket-like") << "x";
    TempDir moved = std::move(*dir);  // ownership moves, the directory stays
    EXPECT_TRUE(fs::exists(path + "/socket-like"));
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(TempDirTest, AKilledOwnersDirectoryIsRemovedByTheNextCreateOnceItIsOld) {
  const std::string left = killed_owners_dir();
  ASSERT_FALSE(left.empty());
  std::ofstream(left + "/auth") << "x";
  ASSERT_TRUE(fs::exists(left)) << "SIGKILL ran no destructor, so the directory is still there";

  // Young: it may be another process's, made a moment ago and not locked yet.
  EXPECT_EQ(remove_abandoned_temp_dirs(kPrefix), 0);
  EXPECT_TRUE(fs::exists(left));

  age(left, 2min);
  auto next = TempDir::create(kPrefix);
  ASSERT_TRUE(next.ok()) << next.status().message();
  EXPECT_FALSE(fs::exists(left));
  EXPECT_EQ(dirs(), std::set<std::string>{next->path()});
}

TEST_F(TempDirTest, ADirectoryALivingProcessHoldsIsKeptHoweverOld) {
  auto held = TempDir::create(kPrefix);
  ASSERT_TRUE(held.ok()) << held.status().message();
  age(held->path(), 10min);
  // Held by this process: the lock is per open directory, so even this process's own
  // probe cannot take it.
  EXPECT_EQ(remove_abandoned_temp_dirs(kPrefix, 0s), 0);
  EXPECT_TRUE(fs::exists(held->path()));

  // Held by another living process.
  auto [pid, other] = forked_owner();
  ASSERT_FALSE(other.empty());
  age(other, 10min);
  EXPECT_EQ(remove_abandoned_temp_dirs(kPrefix, 0s), 0);
  EXPECT_TRUE(fs::exists(other));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  EXPECT_EQ(remove_abandoned_temp_dirs(kPrefix, 0s), 1);
  EXPECT_FALSE(fs::exists(other));
  EXPECT_TRUE(fs::exists(held->path()));
}

TEST_F(TempDirTest, OnlyDirectoriesOfTheExactPatternAreSwept) {
  // An unlocked old directory a link points at, the link named like ours; a file named
  // like ours; a directory with a longer name; another prefix.
  const std::string target = (root_.path() / "elsewhere").string();
  fs::create_directory(target);
  std::ofstream(target + "/keep") << "x";
  const std::string link = (root_.path() / (std::string(kPrefix) + "LINK00")).string();
  fs::create_directory_symlink(target, link);
  const std::string file = (root_.path() / (std::string(kPrefix) + "FILE00")).string();
  std::ofstream(file) << "x";
  const std::string longer = (root_.path() / (std::string(kPrefix) + "TOOLONG0")).string();
  fs::create_directory(longer);
  const std::string other = (root_.path() / "fedpod-else-ABCDEF").string();
  fs::create_directory(other);
  for (const auto& p : {target, longer, other}) age(p, 10min);

  EXPECT_EQ(remove_abandoned_temp_dirs(kPrefix, 0s), 0);
  EXPECT_TRUE(fs::exists(target + "/keep"));
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_TRUE(fs::exists(file));
  EXPECT_TRUE(fs::exists(longer));
  EXPECT_TRUE(fs::exists(other));
}

}  // namespace
}  // namespace fedpod
