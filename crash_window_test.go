package main

import "etrnflush/sender"

// crashWindow is how many messages one SIGKILL can leave sent and not
// settled: the sender's window, the default since the crash tests pass no
// --max-inflight. Each message is still resent at most once per kill.
const crashWindow = sender.DefaultMaxInflight
