// A .wvpack file as the runtime reads it: the safetensors header (each tensor's dtype, shape and
// byte range), the wvpack manifest inside its metadata, and tensors read by byte range.
#ifndef WVIRT_PACK_FILE_H_
#define WVIRT_PACK_FILE_H_

#include <tvm/ffi/any.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace wvirt {

// An error with the wv_status it maps to.
struct Failure : std::runtime_error {
  Failure(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

struct TensorType {
  std::vector<int64_t> shape;
  std::string dtype;  // TVM's name: "float32", "uint16", ...
  int64_t numel() const;
  int64_t nbytes() const;
};

// A weight of a task's layout: where it starts in the task's pages, in float32 elements.
struct Span {
  std::string name;
  TensorType type;
  int64_t offset_elems;
};

struct PackTask {
  std::string name;
  std::vector<Span> layout;
  int64_t n_pages;
  int64_t n_exclusive_pages;
};

struct StoredTensor {
  TensorType type;
  uint64_t begin, end;  // byte range in the file
};

class PackFile {
 public:
  explicit PackFile(const std::string& path);

  const std::string& path() const { return path_; }
  int64_t page_size() const { return page_size_; }
  int64_t n_pool_pages() const { return n_pool_pages_; }
  // SmartDeal pages: the manifest's code format as "<field>=<value>,..." (sorted); "" if float32
  const std::string& code_format() const { return code_format_; }
  const std::vector<PackTask>& tasks() const { return tasks_; }
  bool has(const std::string& tensor) const { return tensors_.count(tensor) != 0; }
  const StoredTensor& tensor(const std::string& name) const;
  // Read tensor `name`'s bytes into `out` (tensor(name).type.nbytes() of them).
  void read(const std::string& name, void* out) const;

 private:
  std::string path_;
  int64_t page_size_ = 0, n_pool_pages_ = 0;
  std::string code_format_;
  std::vector<PackTask> tasks_;
  std::map<std::string, StoredTensor> tensors_;
};

// A SmartDeal code format (a JSON object of integers, or null) as "<field>=<value>,..." sorted
// by field; "" for null (float32 pages). What a pack and a library are compared by.
std::string code_format_text(const tvm::ffi::Any& format);

// Read bytes [begin, end) of `path` into `out`, or throw a Failure naming the file and `what`.
void read_range(const std::string& path, uint64_t begin, uint64_t end, void* out,
                const std::string& what);

}  // namespace wvirt

#endif  // WVIRT_PACK_FILE_H_
