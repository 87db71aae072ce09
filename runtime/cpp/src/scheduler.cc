#include "scheduler.h"

#include <algorithm>
#include <list>

namespace wvirt {

std::vector<int> schedule(const std::vector<std::string>& tasks, bool group, int max_wait,
                          std::string current) {
  std::vector<int> order;
  if (!group) {
    for (int i = 0; i < static_cast<int>(tasks.size()); ++i) order.push_back(i);
    return order;
  }
  std::list<int> pending;  // arrival order
  for (int i = 0; i < static_cast<int>(tasks.size()); ++i) pending.push_back(i);
  std::vector<int> overtaken(tasks.size(), 0);
  while (!pending.empty()) {
    int pick = pending.front();
    if (overtaken[pick] < max_wait) {
      auto mine = std::find_if(pending.begin(), pending.end(),
                               [&](int i) { return tasks[i] == current; });
      if (mine != pending.end()) pick = *mine;
    }
    for (int i : pending) {
      if (i < pick) overtaken[i] += 1;
    }
    pending.remove(pick);
    order.push_back(pick);
    current = tasks[pick];
  }
  return order;
}

}  // namespace wvirt
