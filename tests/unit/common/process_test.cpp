// fedpod::Process: exit statuses survive running() having reaped the child first,
// and the destructor kills what is still running.
#include "fedpod/common/process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <thread>

#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

TEST(ProcessTest, WaitReturnsTheExitStatusAfterRunningReapedTheChild) {
  testing::TempDir dir;
  Process p({"/bin/sh", "-c", "exit 3"}, (dir.path() / "log").string());
  while (p.running()) std::this_thread::sleep_for(1ms);
  // running() reaped it; wait() must still report how it ended, not time out.
  const int status = p.wait(5s);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_EQ(p.wait(0ms), status);
}

TEST(ProcessTest, WaitTimesOutOnARunningChildAndSeesItsSignal) {
  testing::TempDir dir;
  Process p({"/bin/sleep", "30"}, (dir.path() / "log").string());
  EXPECT_EQ(p.wait(20ms), -1);
  EXPECT_TRUE(p.running());
  p.kill(SIGKILL);
  const int status = p.wait(5s);
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_FALSE(p.running());
}

}  // namespace
}  // namespace fedpod
