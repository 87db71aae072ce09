// wv_serve: load a packed library and its .wvpack, answer requests from a file, no Python.
//
//   wv_serve LIBRARY_DIR PACK.wvpack REQUESTS [--out DIR] [--repeat N] [--policy fifo|group]
//            [--max-wait N]
//
// REQUESTS has one request per line, `TASK INPUT.npy...` (the task's inputs in order). Each
// request's outputs go to DIR/request<k>.out<i>.npy (k counts lines from 0). The list is served
// in the order the policy gives (wv_schedule: fifo, or grouped by task with no request
// overtaken by more than --max-wait later ones, default 8), and before a request runs, the next
// one of another task has its exclusive pages prefetched, as the Python runtime's `run_many`
// does. `--repeat N` serves the list N times (outputs written once) and reports the median
// request time.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.h"
#include "wvirt.h"

namespace {

struct Request {
  std::string task;
  std::vector<std::vector<char>> inputs;
  std::vector<std::vector<char>> outputs;
};

void check(wv_status status) {
  if (status != WV_OK) throw std::runtime_error(wv_last_error());
}

std::vector<Request> read_requests(wv_runtime* rt, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("'" + path + "': cannot open the request list");
  std::vector<Request> requests;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    Request r;
    if (!(words >> r.task)) continue;  // a blank line
    int32_t n_inputs = 0, n_outputs = 0;
    check(wv_input_count(rt, r.task.c_str(), &n_inputs));
    check(wv_output_count(rt, r.task.c_str(), &n_outputs));
    std::string file;
    while (words >> file) {
      if (static_cast<int32_t>(r.inputs.size()) == n_inputs) {
        throw std::runtime_error("'" + path + "': task '" + r.task + "' takes " +
                                 std::to_string(n_inputs) + " inputs, the line names more");
      }
      wv_tensor_type type;
      check(wv_input_type(rt, r.task.c_str(), static_cast<int32_t>(r.inputs.size()), &type));
      r.inputs.push_back(read_npy(file, type));
    }
    if (static_cast<int32_t>(r.inputs.size()) != n_inputs) {
      throw std::runtime_error("'" + path + "': task '" + r.task + "' takes " +
                               std::to_string(n_inputs) + " inputs, the line names " +
                               std::to_string(r.inputs.size()));
    }
    for (int32_t i = 0; i < n_outputs; ++i) {
      wv_tensor_type type;
      check(wv_output_type(rt, r.task.c_str(), i, &type));
      r.outputs.emplace_back(type.nbytes);
    }
    requests.push_back(std::move(r));
  }
  return requests;
}

// Serve every request in `order`; returns each request's seconds.
std::vector<double> serve(wv_runtime* rt, std::vector<Request>& requests,
                          const std::vector<int32_t>& order, std::string* current) {
  std::vector<double> seconds;
  for (size_t k = 0; k < order.size(); ++k) {
    Request& r = requests[order[k]];
    auto start = std::chrono::steady_clock::now();
    if (r.task != *current) check(wv_switch(rt, r.task.c_str()));
    *current = r.task;
    for (size_t j = k + 1; j < order.size(); ++j) {
      if (requests[order[j]].task != r.task) {
        check(wv_prefetch(rt, requests[order[j]].task.c_str()));  // read level 2 while r runs
        break;
      }
    }
    std::vector<const void*> in;
    std::vector<void*> out;
    for (auto& x : r.inputs) in.push_back(x.data());
    for (auto& y : r.outputs) out.push_back(y.data());
    check(wv_run(rt, r.task.c_str(), in.data(), static_cast<int32_t>(in.size()), out.data(),
                 static_cast<int32_t>(out.size())));
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string out_dir, policy = "fifo";
  int repeat = 1, max_wait = 8;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (arg == "--repeat" && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--policy" && i + 1 < argc) {
      policy = argv[++i];
    } else if (arg == "--max-wait" && i + 1 < argc) {
      max_wait = std::atoi(argv[++i]);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 3 || (policy != "fifo" && policy != "group")) {
    std::fprintf(stderr,
                 "usage: wv_serve LIBRARY_DIR PACK.wvpack REQUESTS [--out DIR] [--repeat N] "
                 "[--policy fifo|group] [--max-wait N]\n");
    return 2;
  }
  wv_runtime* rt = nullptr;
  if (wv_open(positional[0].c_str(), positional[1].c_str(), &rt) != WV_OK) {
    std::fprintf(stderr, "wv_serve: %s\n", wv_last_error());
    return 1;
  }
  int status = 0;
  try {
    std::vector<Request> requests = read_requests(rt, positional[2]);
    std::string current;
    std::vector<double> seconds;
    std::vector<const char*> tasks;
    for (const Request& r : requests) tasks.push_back(r.task.c_str());
    std::vector<int32_t> order(requests.size());
    for (int round = 0; round < repeat; ++round) {
      check(wv_schedule(rt, tasks.data(), static_cast<int32_t>(tasks.size()),
                        policy == "group" ? WV_POLICY_GROUP : WV_POLICY_FIFO, max_wait,
                        order.data()));
      if (round == 0 && policy == "group") {
        std::printf("served in order:");
        for (int32_t k : order) std::printf(" %d", k);
        std::printf("\n");
      }
      std::vector<double> s = serve(rt, requests, order, &current);
      seconds.insert(seconds.end(), s.begin(), s.end());
      if (round == 0 && !out_dir.empty()) {
        for (size_t k = 0; k < requests.size(); ++k) {
          for (size_t i = 0; i < requests[k].outputs.size(); ++i) {
            wv_tensor_type type;
            check(wv_output_type(rt, requests[k].task.c_str(), static_cast<int32_t>(i), &type));
            write_npy(out_dir + "/request" + std::to_string(k) + ".out" + std::to_string(i) +
                          ".npy",
                      type, requests[k].outputs[i].data());
          }
        }
      }
    }
    wv_counters c;
    check(wv_get_counters(rt, &c));
    std::sort(seconds.begin(), seconds.end());
    double median = seconds.empty() ? 0.0 : seconds[seconds.size() / 2];
    std::printf(
        "%llu requests, %llu switches (%llu prefetched), %.1f us median request, "
        "%llu B resident\n",
        static_cast<unsigned long long>(c.requests), static_cast<unsigned long long>(c.switches),
        static_cast<unsigned long long>(c.prefetch_hits), median * 1e6,
        static_cast<unsigned long long>(wv_resident_bytes(rt)));
  } catch (const std::exception& err) {
    std::fprintf(stderr, "wv_serve: %s\n", err.what());
    status = 1;
  }
  wv_close(rt);
  return status;
}
