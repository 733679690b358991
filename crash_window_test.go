package main

// crashWindow is the --max-inflight the crash tests pass: how many
// messages one SIGKILL can leave sent and not settled. Each message is
// still resent at most once per kill. It is kept small so that the bound
// kills × crashWindow stays well below the number of messages, where a
// resent settled message would show.
const crashWindow = 4
