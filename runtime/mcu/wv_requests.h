/* The request list main.c serves, generated into requests.c by `wvirt build` / `wvirt run`. */
#ifndef WV_REQUESTS_H_
#define WV_REQUESTS_H_

#include <stdint.h>

typedef struct {
  int32_t task;
  void* const* inputs;
  void* const* outputs;
  const uint32_t* output_words; /* 32-bit words of each output */
  int32_t n_outputs;
} wv_request_t;

extern const wv_request_t wv_requests[];
extern const int32_t wv_n_requests;

#endif /* WV_REQUESTS_H_ */
