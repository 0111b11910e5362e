// main() of the tests that run nodes in-process: the nodes' event loops take SIGTERM and
// SIGINT (RunningNode stops a node with SIGTERM to its thread).
#include <gtest/gtest.h>
#include <kj/async-unix.h>

#include <csignal>

int main(int argc, char** argv) {
  // Before any thread starts, so every thread blocks these and the node loops get them.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
