#include "npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>

namespace {

const std::map<std::string, std::string>& descriptors() {  // TVM's dtype -> NumPy's descr
  static const std::map<std::string, std::string> d = {
      {"float32", "<f4"}, {"float64", "<f8"}, {"float16", "<f2"}, {"int64", "<i8"},
      {"int32", "<i4"},   {"int16", "<i2"},   {"int8", "|i1"},    {"uint8", "|u1"},
      {"uint16", "<u2"},  {"uint32", "<u4"},  {"bool", "|b1"},
  };
  return d;
}

std::string shape_text(const wv_tensor_type& type) {
  std::string out = "(";
  for (int i = 0; i < type.ndim; ++i) out += (i ? ", " : "") + std::to_string(type.shape[i]);
  return out + (type.ndim == 1 ? ",)" : ")");
}

std::string header_of(const wv_tensor_type& type) {
  return "{'descr': '" + descriptors().at(type.dtype) +
         "', 'fortran_order': False, 'shape': " + shape_text(type) + ", }";
}

}  // namespace

std::vector<char> read_npy(const std::string& path, const wv_tensor_type& type) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("'" + path + "': cannot open");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    throw std::runtime_error("'" + path + "': not a .npy file");
  }
  uint32_t header_bytes = 0;
  if (magic[6] == 1) {
    uint16_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 2);
    header_bytes = n;
  } else {
    in.read(reinterpret_cast<char*>(&header_bytes), 4);
  }
  std::string header(header_bytes, '\0');
  in.read(header.data(), header_bytes);
  // NumPy writes exactly this dict for a C-order array; anything else is another array
  std::string expected = header_of(type);
  std::string found = header.substr(0, header.find_last_not_of(" \n") + 1);
  if (found != expected) {
    throw std::runtime_error("'" + path + "' holds " + found + ", the input must be " +
                             expected);
  }
  std::vector<char> data(type.nbytes);
  if (!in.read(data.data(), static_cast<std::streamsize>(type.nbytes))) {
    throw std::runtime_error("'" + path + "' is truncated");
  }
  return data;
}

void write_npy(const std::string& path, const wv_tensor_type& type, const void* data) {
  std::string header = header_of(type);
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";  // NumPy pads to 64 bytes
  std::ofstream out(path, std::ios::binary);
  uint16_t n = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(reinterpret_cast<const char*>(&n), 2);
  out << header;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(type.nbytes));
  if (!out) throw std::runtime_error("'" + path + "': cannot write");
}
