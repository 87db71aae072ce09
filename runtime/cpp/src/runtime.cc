// The multitask runtime behind wvirt.h: the C++ counterpart of runtime/multitask_runtime.py
// (CPU; materialize and fused modes; float32 and SmartDeal pages; exclusive pages in level 2
// with one prefetch slot).
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>

#include "pack_file.h"
#include "scheduler.h"
#include "wvirt.h"

namespace wvirt {
namespace ffi = tvm::ffi;
namespace json = tvm::ffi::json;

namespace {

constexpr int64_t kAlignBytes = 64;  // what TVM's kernels accept for a tensor's data
constexpr int64_t kPageTableIdsUint16 = 65536;  // plan.PAGE_TABLE_IDS_UINT16
// abi.py's names
const char* const kGather = "wv_gather_pages";
const char* const kCodedGather = "wv_gather_coded_pages";
const char* const kExclusiveGather = "wv_gather_pages_exclusive";
const char* const kCodedExclusiveGather = "wv_gather_coded_pages_exclusive";

// TVM tensors over 64-byte-aligned host memory, zeroed: no kernel ever reads bytes nobody wrote
struct AlignedAlloc {
  void AllocData(DLTensor* t) {
    size_t n = static_cast<size_t>(ffi::GetDataSize(*t));
    n = (n + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
    t->data = std::aligned_alloc(kAlignBytes, n == 0 ? kAlignBytes : n);
    if (t->data == nullptr) throw Failure(WV_ERROR_ARGUMENT, "out of memory");
    std::memset(t->data, 0, n);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

ffi::Tensor empty(const std::vector<int64_t>& shape, const std::string& dtype) {
  return ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                  ffi::StringToDLDataType(dtype), DLDevice{kDLCPU, 0});
}

// A contiguous view of `base` from element `offset` (of base's dtype), zero-copy.
ffi::Tensor view(const ffi::Tensor& base, int64_t offset, const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
    strides[i] = strides[i + 1] * shape[i + 1];
  }
  return base.as_strided(ffi::ShapeView(shape.data(), shape.size()),
                         ffi::ShapeView(strides.data(), strides.size()), offset);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Failure(WV_ERROR_FILE, "'" + path + "': cannot open");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<TensorType> tensor_types(const ffi::Any& list) {  // [[shape, dtype], ...]
  std::vector<TensorType> out;
  for (const ffi::Any& entry : list.cast<json::Array>()) {
    json::Array pair = entry.cast<json::Array>();
    TensorType type;
    for (const ffi::Any& d : pair[0].cast<json::Array>()) type.shape.push_back(d.cast<int64_t>());
    type.dtype = pair[1].cast<ffi::String>();
    out.push_back(std::move(type));
  }
  return out;
}

void flatten(const ffi::Any& result, std::vector<ffi::Tensor>* out) {
  if (auto tensor = result.try_cast<ffi::Tensor>()) {
    out->push_back(*tensor);
    return;
  }
  for (const ffi::Any& item : result.cast<ffi::Array<ffi::Any>>()) flatten(item, out);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

struct Task {
  std::string name;
  std::vector<TensorType> inputs, outputs, weight_types;
  std::vector<Span> layout;
  int64_t n_pages = 0, n_exclusive_pages = 0;
  ffi::Function function;
  ffi::Optional<ffi::Function> transform;
  ffi::Tensor page_table;
  std::vector<ffi::Tensor> input_tensors;  // allocated once, filled per request
  ffi::Tensor target;                      // materialize: its pages' view of the weight buffer
  std::vector<ffi::Tensor> weights;        // materialize: its weights' views of the buffer
  std::vector<std::string> exclusive_parts;  // tensors of the pack holding its exclusive pages
};

class Runtime {
 public:
  Runtime(const std::string& library_dir, const std::string& pack_path)
      : pack_(pack_path) {
    json::Object meta = json::Parse(read_text(library_dir + "/library.json")).cast<json::Object>();
    mode_ = std::string(meta.at("mode").cast<ffi::String>());
    std::string target = meta.at("target").cast<ffi::String>();
    if (target.find("\"llvm\"") == std::string::npos && target.rfind("llvm", 0) != 0) {
      throw Failure(WV_ERROR_FORMAT, "'" + library_dir + "' was built for " + target +
                                         "; this runtime runs llvm (CPU) libraries");
    }
    const std::string library_format = code_format_text(meta.at("code_format"));
    coded_ = !pack_.code_format().empty();
    if (coded_ && !library_format.empty() && library_format != pack_.code_format()) {
      throw Failure(WV_ERROR_FORMAT, "library and pack do not belong together: the pack's codes "
                                     "are stored as " + pack_.code_format() +
                                     ", the library decodes " + library_format);
    }
    ffi::Module library = ffi::Module::LoadFromFile(library_dir + "/library.so");
    vm_ = library->GetFunction("vm_load_executable", true).value()().cast<ffi::Module>();
    vm_->GetFunction("vm_initialization", false).value()(static_cast<int>(kDLCPU), 0, 2);
    load_tasks(meta.at("tasks").cast<json::Object>(), library_dir);
    load_pool();
    if (mode_ == "materialize") setup_weight_buffer();
    setup_exclusive();
  }

  ~Runtime() {
    if (prefetch_.valid()) prefetch_.wait();
  }

  const std::vector<Task>& tasks() const { return tasks_; }

  const Task& task(const std::string& name) const {
    for (const Task& t : tasks_) {
      if (t.name == name) return t;
    }
    std::string known;
    for (const Task& t : tasks_) known += (known.empty() ? "" : ", ") + t.name;
    throw Failure(WV_ERROR_ARGUMENT, "no task '" + name + "' in this runtime (has " + known + ")");
  }

  void switch_to(const std::string& name) {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    Task& t = const_cast<Task&>(task(name));
    auto start = std::chrono::steady_clock::now();
    if (mode_ == "fused") {
      arguments_ = {pool_parts_.at(0), t.page_table};
    } else {
      std::vector<ffi::AnyView> args(pool_parts_.begin(), pool_parts_.end());
      std::vector<ffi::Tensor> exclusive;
      if (t.n_exclusive_pages) {
        exclusive = exclusive_views(t, exclusive_slot(t));
        args.insert(args.end(), exclusive.begin(), exclusive.end());
      }
      args.push_back(t.page_table);
      args.push_back(t.target);
      ffi::Any ignored;
      (t.n_exclusive_pages ? *gather_exclusive_ : *gather_).CallPacked(
          args.data(), static_cast<int32_t>(args.size()), &ignored);
      counters_.bytes_gathered += t.n_pages * pack_.page_size() * 4;
      if (t.transform.has_value()) {
        ffi::Array<ffi::Tensor> weights(t.weights.begin(), t.weights.end());
        arguments_.clear();
        flatten((*t.transform)(weights), &arguments_);
      } else {
        arguments_ = t.weights;
      }
    }
    current_ = name;
    counters_.switches += 1;
    counters_.switch_seconds += seconds_since(start);
  }

  void prefetch(const std::string& name) {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    const Task& t = task(name);
    if (!t.n_exclusive_pages || mode_ != "materialize") return;
    if (prefetch_.valid()) {
      if (prefetched_ == name) return;
      prefetch_.wait();  // the prefetch scratch is about to be reused
    }
    prefetched_ = name;
    prefetch_ = std::async(std::launch::async, [this, &t] { return load_exclusive(t, 1); });
  }

  void run(const std::string& name, const void* const* inputs, int32_t n_inputs,
           void* const* outputs, int32_t n_outputs) {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    Task& t = const_cast<Task&>(task(name));
    if (n_inputs != static_cast<int32_t>(t.inputs.size()) ||
        n_outputs != static_cast<int32_t>(t.outputs.size())) {
      throw Failure(WV_ERROR_ARGUMENT,
                    "task '" + name + "' takes " + std::to_string(t.inputs.size()) +
                        " inputs and gives " + std::to_string(t.outputs.size()) + " outputs, got " +
                        std::to_string(n_inputs) + " and " + std::to_string(n_outputs));
    }
    for (int32_t i = 0; i < n_inputs; ++i) {
      if (inputs[i] == nullptr) {
        throw Failure(WV_ERROR_ARGUMENT, "task '" + name + "': input " + std::to_string(i) +
                                             " is NULL");
      }
      std::memcpy(t.input_tensors[i].data_ptr(), inputs[i], t.inputs[i].nbytes());
    }
    if (current_ != name) switch_to(name);
    auto start = std::chrono::steady_clock::now();
    std::vector<ffi::AnyView> args(t.input_tensors.begin(), t.input_tensors.end());
    args.insert(args.end(), arguments_.begin(), arguments_.end());
    ffi::Any result;
    t.function.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    std::vector<ffi::Tensor> results;
    flatten(result, &results);
    if (results.size() != t.outputs.size()) {
      throw Failure(WV_ERROR_FORMAT, "task '" + name + "' returned " +
                                         std::to_string(results.size()) + " outputs, its " +
                                         "library.json says " + std::to_string(t.outputs.size()));
    }
    for (size_t i = 0; i < results.size(); ++i) {
      ffi::ShapeView shape = results[i].shape();
      if (std::vector<int64_t>(shape.begin(), shape.end()) != t.outputs[i].shape ||
          std::string(ffi::DLDataTypeToString(results[i].dtype())) != t.outputs[i].dtype) {
        throw Failure(WV_ERROR_FORMAT, "task '" + name + "': output " + std::to_string(i) +
                                           " is not the type its library.json says");
      }
      if (outputs[i] == nullptr) {
        throw Failure(WV_ERROR_ARGUMENT, "task '" + name + "': output " + std::to_string(i) +
                                             " is NULL");
      }
      std::memcpy(outputs[i], results[i].data_ptr(), t.outputs[i].nbytes());
    }
    counters_.requests += 1;
    counters_.inference_seconds += seconds_since(start);
  }

  wv_counters counters() const {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    return counters_;
  }

  uint64_t resident_bytes() const { return resident_bytes_; }

  std::string current() const {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    return current_;
  }

 private:
  void load_tasks(const json::Object& signatures, const std::string& library_dir) {
    const std::vector<PackTask>& packed = pack_.tasks();
    std::string problems;
    if (signatures.size() != packed.size()) {
      problems = "the pack has " + std::to_string(packed.size()) + " tasks, the library " +
                 std::to_string(signatures.size());
    }
    for (const PackTask& p : packed) {
      auto entry = signatures.find(ffi::String(p.name));
      if (entry == signatures.end()) {
        problems += (problems.empty() ? "" : "; ") + ("task '" + p.name + "' is not in the library");
        continue;
      }
      json::Object s = (*entry).second.cast<json::Object>();
      Task t;
      t.name = p.name;
      t.layout = p.layout;
      t.n_pages = p.n_pages;
      t.n_exclusive_pages = p.n_exclusive_pages;
      t.inputs = tensor_types(s.at("inputs"));
      t.weight_types = tensor_types(s.at("weights"));
      auto outputs = s.find(ffi::String("outputs"));
      if (outputs == s.end() || (*outputs).second.cast<json::Array>().empty()) {
        throw Failure(WV_ERROR_FORMAT, "'" + library_dir + "/library.json' names no outputs for "
                                       "task '" + p.name + "': build it again with this " +
                                       "tvm-weightvirt");
      }
      t.outputs = tensor_types((*outputs).second);
      if (mode_ == "materialize") {
        bool same = t.weight_types.size() == p.layout.size();
        for (size_t i = 0; same && i < p.layout.size(); ++i) {
          same = t.weight_types[i].shape == p.layout[i].type.shape &&
                 t.weight_types[i].dtype == p.layout[i].type.dtype;
        }
        if (!same) {
          problems += (problems.empty() ? "" : "; ") +
                      ("task '" + p.name + "': the library's weights are not the pack's layout");
        }
      } else if (s.at("n_pages").cast<int64_t>() != p.n_pages) {
        problems += (problems.empty() ? "" : "; ") +
                    ("task '" + p.name + "': the library expects " +
                     std::to_string(s.at("n_pages").cast<int64_t>()) + " pages, the pack has " +
                     std::to_string(p.n_pages));
      }
      t.function = vm_->GetFunction("task_" + p.name, false).value();
      if (mode_ == "materialize") {
        t.transform = vm_->GetFunction("wv_transform_task_" + p.name, false);
      }
      for (const TensorType& in : t.inputs) t.input_tensors.push_back(empty(in.shape, in.dtype));
      tasks_.push_back(std::move(t));
    }
    if (!problems.empty()) {
      throw Failure(WV_ERROR_FORMAT, "library and pack do not belong together: " + problems);
    }
  }

  // The pool (float32 pages, or SmartDeal codes and bases) and every page table, resident.
  void load_pool() {
    std::vector<std::string> parts = coded_ ? std::vector<std::string>{"pool_codes", "pool_bases"}
                                            : std::vector<std::string>{"pool"};
    for (const std::string& part : parts) {
      const TensorType& type = pack_.tensor(part).type;
      ffi::Tensor t = empty(type.shape, type.dtype);
      pack_.read(part, t.data_ptr());
      pool_parts_.push_back(t);
      resident_bytes_ += type.nbytes();
    }
    int64_t most_exclusive = 0;
    for (const Task& t : tasks_) most_exclusive = std::max(most_exclusive, t.n_exclusive_pages);
    // plan.page_table_dtype: uint16 where every id fits, as the kernels were lowered for
    bool narrow = pack_.n_pool_pages() + most_exclusive <= kPageTableIdsUint16;
    for (Task& t : tasks_) {
      const std::string key = "page_table." + t.name;
      const StoredTensor& stored = pack_.tensor(key);
      std::vector<char> bytes(stored.type.nbytes());
      pack_.read(key, bytes.data());
      t.page_table = empty({t.n_pages}, narrow ? "uint16" : "int32");
      for (int64_t i = 0; i < t.n_pages; ++i) {
        int64_t id = stored.type.dtype == "uint16"
                         ? reinterpret_cast<const uint16_t*>(bytes.data())[i]
                         : reinterpret_cast<const int32_t*>(bytes.data())[i];
        if (narrow) {
          static_cast<uint16_t*>(t.page_table.data_ptr())[i] = static_cast<uint16_t>(id);
        } else {
          static_cast<int32_t*>(t.page_table.data_ptr())[i] = static_cast<int32_t>(id);
        }
      }
      resident_bytes_ += t.n_pages * (narrow ? 2 : 4);
    }
    if (mode_ == "materialize") {
      const char* name = coded_ ? kCodedGather : kGather;
      gather_ = vm_->GetFunction(name, true);
      if (!gather_.has_value()) {
        throw Failure(WV_ERROR_FORMAT, std::string("library and pack do not belong together: "
                                                   "the library has no '") + name + "'");
      }
    }
  }

  // One weight buffer for the largest task; per task the views that are its gather target and
  // its weights (the layout aligns every weight to 64 bytes).
  void setup_weight_buffer() {
    int64_t page_size = pack_.page_size(), most = 1;
    for (const Task& t : tasks_) most = std::max(most, t.n_pages);
    weight_buffer_ = empty({most * page_size}, "float32");
    resident_bytes_ += most * page_size * 4;
    for (Task& t : tasks_) {
      t.target = view(weight_buffer_, 0, {t.n_pages, page_size});
      for (const Span& s : t.layout) t.weights.push_back(view(weight_buffer_, s.offset_elems,
                                                             s.type.shape));
    }
  }

  // Two level-1 scratch slots for exclusive pages, each sized for the largest task's: slot 0
  // for reads at a switch, slot 1 for prefetches; one buffer per stored part.
  void setup_exclusive() {
    int64_t most = 0;
    for (Task& t : tasks_) {
      if (!t.n_exclusive_pages) continue;
      t.exclusive_parts = coded_ ? std::vector<std::string>{"exclusive_codes." + t.name,
                                                            "exclusive_bases." + t.name}
                                 : std::vector<std::string>{"exclusive." + t.name};
      most = std::max(most, t.n_exclusive_pages);
    }
    if (most == 0) return;
    const char* name = coded_ ? kCodedExclusiveGather : kExclusiveGather;
    gather_exclusive_ = vm_->GetFunction(name, true);
    if (!gather_exclusive_.has_value()) {
      throw Failure(WV_ERROR_FORMAT, std::string("the pack has exclusive pages but the library "
                                                 "has no '") + name + "' (build it from this pack)");
    }
    const Task* largest = nullptr;
    for (const Task& t : tasks_) {
      if (t.n_exclusive_pages == most) largest = &t;
    }
    for (auto& slot : scratch_) {
      for (const std::string& part : largest->exclusive_parts) {
        TensorType type = pack_.tensor(part).type;
        slot.push_back(empty(type.shape, type.dtype));
        resident_bytes_ += type.nbytes();
      }
    }
  }

  // Task t's exclusive pages in scratch `slot`: a view of each part, its pages' rows.
  std::vector<ffi::Tensor> exclusive_views(const Task& t, int slot) {
    std::vector<ffi::Tensor> views;
    for (size_t i = 0; i < t.exclusive_parts.size(); ++i) {
      std::vector<int64_t> shape = pack_.tensor(t.exclusive_parts[i]).type.shape;
      views.push_back(view(scratch_[slot][i], 0, shape));
    }
    return views;
  }

  // The slot holding t's exclusive pages: the finished prefetch's if it was for t, else slot 0,
  // read now from level 2.
  int exclusive_slot(const Task& t) {
    if (prefetch_.valid() && prefetched_ == t.name) {
      counters_.bytes_read_l2 += prefetch_.get();  // rethrows a failed read
      counters_.prefetch_hits += 1;
      return 1;
    }
    counters_.bytes_read_l2 += load_exclusive(t, 0);
    return 0;
  }

  uint64_t load_exclusive(const Task& t, int slot) {
    uint64_t n = 0;
    for (size_t i = 0; i < t.exclusive_parts.size(); ++i) {
      const StoredTensor& stored = pack_.tensor(t.exclusive_parts[i]);
      read_range(pack_.path(), stored.begin, stored.end, scratch_[slot][i].data_ptr(),
                 "task '" + t.name + "': its exclusive pages");
      n += stored.end - stored.begin;
    }
    return n;
  }

  PackFile pack_;
  std::string mode_;
  bool coded_ = false;
  ffi::Module vm_{ffi::UnsafeInit()};
  std::vector<Task> tasks_;
  std::vector<ffi::Tensor> pool_parts_;
  ffi::Optional<ffi::Function> gather_, gather_exclusive_;
  ffi::Tensor weight_buffer_;
  std::vector<ffi::Tensor> scratch_[2];
  std::future<uint64_t> prefetch_;
  std::string prefetched_;
  std::vector<ffi::Tensor> arguments_;  // the current task's, after its inputs
  std::string current_;
  wv_counters counters_{};
  uint64_t resident_bytes_ = 0;
  mutable std::recursive_mutex mutex_;
};

}  // namespace wvirt

// ---- the C API ------------------------------------------------------------------------------

struct wv_runtime {
  wv_runtime(const char* library_dir, const char* pack_path) : runtime(library_dir, pack_path) {}
  wvirt::Runtime runtime;
};

namespace {

thread_local std::string last_error;

template <typename F>
wv_status guarded(F&& body) {
  try {
    body();
    return WV_OK;
  } catch (const wvirt::Failure& err) {
    last_error = err.what();
    return static_cast<wv_status>(err.status);
  } catch (const tvm::ffi::Error& err) {
    last_error = err.kind() + ": " + err.message();
    return WV_ERROR_TVM;
  } catch (const std::exception& err) {
    last_error = err.what();
    return WV_ERROR_TVM;
  }
}

void check_runtime(const wv_runtime* runtime) {
  if (runtime == nullptr) throw wvirt::Failure(WV_ERROR_ARGUMENT, "the runtime is NULL");
}

const wvirt::Task& task_of(const wv_runtime* runtime, const char* task) {
  check_runtime(runtime);
  if (task == nullptr) throw wvirt::Failure(WV_ERROR_ARGUMENT, "the task name is NULL");
  return runtime->runtime.task(task);
}

void fill_type(const std::vector<wvirt::TensorType>& types, int32_t index, const char* kind,
               const std::string& task, wv_tensor_type* out) {
  if (out == nullptr) throw wvirt::Failure(WV_ERROR_ARGUMENT, "the type pointer is NULL");
  if (index < 0 || index >= static_cast<int32_t>(types.size())) {
    throw wvirt::Failure(WV_ERROR_ARGUMENT, "task '" + task + "' has " +
                                                std::to_string(types.size()) + " " + kind +
                                                "s, no " + kind + " " + std::to_string(index));
  }
  const wvirt::TensorType& t = types[index];
  *out = {static_cast<int32_t>(t.shape.size()), t.shape.data(), t.dtype.c_str(),
          static_cast<size_t>(t.nbytes())};
}

}  // namespace

extern "C" {

wv_status wv_open(const char* library_dir, const char* pack_path, wv_runtime** runtime) {
  return guarded([&] {
    if (library_dir == nullptr || pack_path == nullptr || runtime == nullptr) {
      throw wvirt::Failure(WV_ERROR_ARGUMENT, "wv_open: a NULL argument");
    }
    *runtime = nullptr;
    *runtime = new wv_runtime(library_dir, pack_path);
  });
}

void wv_close(wv_runtime* runtime) { delete runtime; }

const char* wv_last_error(void) { return last_error.c_str(); }

int32_t wv_task_count(const wv_runtime* runtime) {
  return runtime ? static_cast<int32_t>(runtime->runtime.tasks().size()) : 0;
}

const char* wv_task_name(const wv_runtime* runtime, int32_t index) {
  if (runtime == nullptr || index < 0 || index >= wv_task_count(runtime)) return nullptr;
  return runtime->runtime.tasks()[index].name.c_str();
}

wv_status wv_input_count(const wv_runtime* runtime, const char* task, int32_t* count) {
  return guarded([&] { *count = static_cast<int32_t>(task_of(runtime, task).inputs.size()); });
}

wv_status wv_input_type(const wv_runtime* runtime, const char* task, int32_t index,
                        wv_tensor_type* type) {
  return guarded([&] { fill_type(task_of(runtime, task).inputs, index, "input", task, type); });
}

wv_status wv_output_count(const wv_runtime* runtime, const char* task, int32_t* count) {
  return guarded([&] { *count = static_cast<int32_t>(task_of(runtime, task).outputs.size()); });
}

wv_status wv_output_type(const wv_runtime* runtime, const char* task, int32_t index,
                         wv_tensor_type* type) {
  return guarded([&] { fill_type(task_of(runtime, task).outputs, index, "output", task, type); });
}

wv_status wv_switch(wv_runtime* runtime, const char* task) {
  return guarded([&] {
    task_of(runtime, task);
    runtime->runtime.switch_to(task);
  });
}

wv_status wv_prefetch(wv_runtime* runtime, const char* task) {
  return guarded([&] {
    task_of(runtime, task);
    runtime->runtime.prefetch(task);
  });
}

wv_status wv_run(wv_runtime* runtime, const char* task, const void* const* inputs,
                 int32_t n_inputs, void* const* outputs, int32_t n_outputs) {
  return guarded([&] {
    task_of(runtime, task);
    if ((n_inputs && inputs == nullptr) || (n_outputs && outputs == nullptr)) {
      throw wvirt::Failure(WV_ERROR_ARGUMENT, "wv_run: the inputs or outputs array is NULL");
    }
    runtime->runtime.run(task, inputs, n_inputs, outputs, n_outputs);
  });
}

wv_status wv_schedule(const wv_runtime* runtime, const char* const* tasks, int32_t n,
                      wv_policy policy, int32_t max_wait, int32_t* order) {
  return guarded([&] {
    check_runtime(runtime);
    if (n < 0 || (n > 0 && (tasks == nullptr || order == nullptr))) {
      throw wvirt::Failure(WV_ERROR_ARGUMENT, "wv_schedule: a NULL tasks or order array");
    }
    if (policy != WV_POLICY_FIFO && policy != WV_POLICY_GROUP) {
      throw wvirt::Failure(WV_ERROR_ARGUMENT, "wv_schedule: policy must be WV_POLICY_FIFO or "
                                              "WV_POLICY_GROUP, got " + std::to_string(policy));
    }
    if (max_wait < 0) {
      throw wvirt::Failure(WV_ERROR_ARGUMENT, "wv_schedule: max_wait must be >= 0 requests, "
                                              "got " + std::to_string(max_wait));
    }
    std::vector<std::string> names;
    for (int32_t i = 0; i < n; ++i) names.push_back(task_of(runtime, tasks[i]).name);
    std::vector<int> served = wvirt::schedule(names, policy == WV_POLICY_GROUP, max_wait,
                                              runtime->runtime.current());
    std::copy(served.begin(), served.end(), order);
  });
}

wv_status wv_get_counters(const wv_runtime* runtime, wv_counters* counters) {
  return guarded([&] {
    check_runtime(runtime);
    if (counters == nullptr) throw wvirt::Failure(WV_ERROR_ARGUMENT, "counters is NULL");
    *counters = runtime->runtime.counters();
  });
}

uint64_t wv_resident_bytes(const wv_runtime* runtime) {
  return runtime ? runtime->runtime.resident_bytes() : 0;
}

}  // extern "C"
