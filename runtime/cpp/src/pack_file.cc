#include "pack_file.h"

#include <tvm/ffi/extra/json.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "wvirt.h"

namespace wvirt {
namespace json = tvm::ffi::json;
using tvm::ffi::Any;
using tvm::ffi::String;

namespace {

constexpr int kReadsVersions[] = {1, 2, 3, 4, 5};  // artifact.READS_VERSIONS

// safetensors dtype codes and the bytes of each, as TVM names them
const std::map<std::string, std::pair<std::string, int>>& safetensors_dtypes() {
  static const std::map<std::string, std::pair<std::string, int>> dtypes = {
      {"F32", {"float32", 4}}, {"F16", {"float16", 2}}, {"F64", {"float64", 8}},
      {"I64", {"int64", 8}},   {"I32", {"int32", 4}},   {"I16", {"int16", 2}},
      {"I8", {"int8", 1}},     {"U64", {"uint64", 8}},  {"U32", {"uint32", 4}},
      {"U16", {"uint16", 2}},  {"U8", {"uint8", 1}},    {"BOOL", {"bool", 1}},
  };
  return dtypes;
}

int dtype_bytes(const std::string& dtype) {
  for (const auto& [code, named] : safetensors_dtypes()) {
    if (named.first == dtype) return named.second;
  }
  throw Failure(WV_ERROR_FORMAT, "unknown dtype '" + dtype + "'");
}

// The JSON value `object[key]`, or a Failure naming `where` and the field.
Any field(const json::Object& object, const char* key, const std::string& where) {
  auto it = object.find(String(key));
  if (it == object.end()) {
    throw Failure(WV_ERROR_FORMAT, where + ": no field '" + key + "'");
  }
  return (*it).second;
}

template <typename T>
T field_as(const json::Object& object, const char* key, const std::string& where) {
  Any value = field(object, key, where);
  auto cast = value.try_cast<T>();
  if (!cast.has_value()) {
    throw Failure(WV_ERROR_FORMAT, where + ": field '" + key + "' has the wrong type");
  }
  return *cast;
}

std::vector<int64_t> int_list(const json::Array& values, const std::string& where) {
  std::vector<int64_t> out;
  for (const Any& v : values) {
    auto i = v.try_cast<int64_t>();
    if (!i.has_value()) throw Failure(WV_ERROR_FORMAT, where + ": not a list of integers");
    out.push_back(*i);
  }
  return out;
}

json::Object parse_object(const std::string& text, const std::string& where) {
  String error;
  Any value = json::Parse(String(text), &error);
  auto object = value.try_cast<json::Object>();
  if (!error.empty() || !object.has_value()) {
    throw Failure(WV_ERROR_FORMAT, where + ": not a JSON object (" + std::string(error) + ")");
  }
  return *object;
}

}  // namespace

std::string code_format_text(const Any& format) {
  auto fields = format.try_cast<json::Object>();
  if (!fields.has_value()) return "";
  std::vector<std::string> parts;
  for (const auto& [key, value] : *fields) {
    parts.push_back(std::string(key.cast<String>()) + "=" + std::to_string(value.cast<int64_t>()));
  }
  std::sort(parts.begin(), parts.end());
  std::string text;
  for (const std::string& part : parts) text += (text.empty() ? "" : ",") + part;
  return text;
}

int64_t TensorType::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t TensorType::nbytes() const { return numel() * dtype_bytes(dtype); }

void read_range(const std::string& path, uint64_t begin, uint64_t end, void* out,
                const std::string& what) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw Failure(WV_ERROR_FILE, "'" + path + "': cannot open (" + what + ")");
  size_t n = static_cast<size_t>(end - begin);
  if (std::fseek(file.get(), static_cast<long>(begin), SEEK_SET) != 0 ||
      std::fread(out, 1, n, file.get()) != n) {
    throw Failure(WV_ERROR_FILE, "'" + path + "' is truncated: " + what + " needs bytes [" +
                                     std::to_string(begin) + ", " + std::to_string(end) + ")");
  }
}

PackFile::PackFile(const std::string& path) : path_(path) {
  const std::string where = "'" + path + "'";
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw Failure(WV_ERROR_FILE, where + ": cannot open the .wvpack");
  std::fseek(file.get(), 0, SEEK_END);
  const uint64_t file_bytes = static_cast<uint64_t>(std::ftell(file.get()));
  uint64_t header_bytes = 0;  // safetensors: a little-endian u64, then that much JSON
  std::fseek(file.get(), 0, SEEK_SET);
  if (std::fread(&header_bytes, 8, 1, file.get()) != 1 || header_bytes > file_bytes - 8) {
    throw Failure(WV_ERROR_FORMAT, where + ": not a safetensors file (no header)");
  }
  std::string header(header_bytes, '\0');
  if (std::fread(header.data(), 1, header_bytes, file.get()) != header_bytes) {
    throw Failure(WV_ERROR_FORMAT, where + ": not a safetensors file (truncated header)");
  }
  const uint64_t data_start = 8 + header_bytes;
  json::Object entries = parse_object(header, where + " header");

  // Step 1. The manifest, from the metadata's `wvpack` entry (format 2 on: an envelope
  // holding it and its digest; format 1: the manifest itself).
  auto metadata_entry = entries.find(String("__metadata__"));
  if (metadata_entry == entries.end()) {
    throw Failure(WV_ERROR_FORMAT, where + ": no wvpack manifest in the file's metadata");
  }
  json::Object metadata = (*metadata_entry).second.cast<json::Object>();
  std::string wvpack = field_as<String>(metadata, "wvpack", where + " metadata");
  json::Object manifest = parse_object(wvpack, where + " manifest");
  if (manifest.find(String("manifest")) != manifest.end()) {
    manifest = parse_object(field_as<String>(manifest, "manifest", where), where + " manifest");
  }
  if (std::string(field_as<String>(manifest, "format", where)) != "wvpack") {
    throw Failure(WV_ERROR_FORMAT, where + ": not a wvpack manifest");
  }
  int64_t version = field_as<int64_t>(manifest, "version", where);
  if (std::find(std::begin(kReadsVersions), std::end(kReadsVersions), version) ==
      std::end(kReadsVersions)) {
    throw Failure(WV_ERROR_FORMAT, where + ": format version " + std::to_string(version) +
                                       " is not supported (this runtime reads 1 to 5)");
  }
  page_size_ = field_as<int64_t>(manifest, "page_size", where);
  n_pool_pages_ = field_as<int64_t>(manifest, "n_pool_pages", where);
  code_format_ = code_format_text(field(manifest, "code_format", where));
  for (const Any& entry : field_as<json::Array>(manifest, "tasks", where)) {
    json::Object t = entry.cast<json::Object>();
    PackTask task;
    task.name = field_as<String>(t, "name", where + " task");
    const std::string at = where + " task '" + task.name + "'";
    task.n_pages = field_as<int64_t>(t, "n_pages", at);
    task.n_exclusive_pages = field_as<int64_t>(t, "n_exclusive_pages", at);
    for (const Any& s : field_as<json::Array>(t, "layout", at)) {
      json::Object span = s.cast<json::Object>();
      task.layout.push_back(
          {std::string(field_as<String>(span, "name", at)),
           {int_list(field_as<json::Array>(span, "shape", at), at),
            std::string(field_as<String>(span, "dtype", at))},
           field_as<int64_t>(span, "offset", at)});
    }
    tasks_.push_back(std::move(task));
  }

  // Step 2. Every tensor's type and byte range, checked against the file's size.
  for (const auto& [key, value] : entries) {
    std::string name = key.cast<String>();
    if (name == "__metadata__") continue;
    json::Object entry = value.cast<json::Object>();
    const std::string at = where + " tensor '" + name + "'";
    std::string code = field_as<String>(entry, "dtype", at);
    auto dtype = safetensors_dtypes().find(code);
    if (dtype == safetensors_dtypes().end()) {
      throw Failure(WV_ERROR_FORMAT, at + ": unknown dtype " + code);
    }
    std::vector<int64_t> range = int_list(field_as<json::Array>(entry, "data_offsets", at), at);
    StoredTensor stored{{int_list(field_as<json::Array>(entry, "shape", at), at),
                         dtype->second.first},
                        data_start + static_cast<uint64_t>(range.at(0)),
                        data_start + static_cast<uint64_t>(range.at(1))};
    if (stored.end - stored.begin != static_cast<uint64_t>(stored.type.nbytes()) ||
        stored.end > file_bytes) {
      throw Failure(WV_ERROR_FORMAT, at + ": its byte range does not fit its type or the file");
    }
    tensors_[name] = std::move(stored);
  }
}

const StoredTensor& PackFile::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Failure(WV_ERROR_FORMAT, "'" + path_ + "': no tensor " + name);
  return it->second;
}

void PackFile::read(const std::string& name, void* out) const {
  const StoredTensor& t = tensor(name);
  read_range(path_, t.begin, t.end, out, "tensor '" + name + "'");
}

}  // namespace wvirt
