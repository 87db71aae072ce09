// .npy files (NumPy's format, version 1.0, little-endian, C order) for wv_serve's requests.
#ifndef WV_SERVE_NPY_H_
#define WV_SERVE_NPY_H_

#include <string>
#include <vector>

#include "wvirt.h"

// The array in `path`, which must have `type`'s shape and dtype; throws std::runtime_error
// naming the file and what differs.
std::vector<char> read_npy(const std::string& path, const wv_tensor_type& type);
void write_npy(const std::string& path, const wv_tensor_type& type, const void* data);

#endif  // WV_SERVE_NPY_H_
