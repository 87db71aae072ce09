// The order to serve a queue of requests in: runtime/scheduler.py's, in C++.
#ifndef WVIRT_SCHEDULER_H_
#define WVIRT_SCHEDULER_H_

#include <string>
#include <vector>

namespace wvirt {

// "fifo" (group = false): arrival order. "group": keep serving the current task's oldest pending
// request; when it has none, switch to the task of the oldest pending request. A request that
// `max_wait` later requests have already overtaken is served next, whatever its task.
std::vector<int> schedule(const std::vector<std::string>& tasks, bool group, int max_wait,
                          std::string current);

}  // namespace wvirt

#endif  // WVIRT_SCHEDULER_H_
