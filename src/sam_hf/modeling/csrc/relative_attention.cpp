// Softmax attention with the decomposed relative-position bias of SAM's image encoder, fused for the CPU (issue #22).
//
// One OpenMP region for the whole layer: its tasks are (group, block of query rows) pairs handed out dynamically, and
// each task computes its rows' logits (rows x keys, a few MiB that stay in cache), adds the bias rel_h[q, kh] +
// rel_w[q, kw] in place, takes the softmax and multiplies by the values. A loop of small ATen calls opens one parallel
// region per call, and each waits for its slowest thread; with one region and dynamic scheduling, a thread that the
// operating system takes away for a while (another busy process) only does fewer tasks. The ATen calls inside a task
// run single-threaded (ATen does not nest parallel regions).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>

// query (pre-scaled), key, value: (groups, tokens, head_dim) float32, contiguous; rel_h: (groups, tokens, height),
// rel_w: (groups, tokens, width), tokens = height * width. Returns the attention output (groups, tokens, head_dim).
torch::Tensor relative_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value, const torch::Tensor& rel_h,
    const torch::Tensor& rel_w, int64_t rows) {
  const int64_t groups = query.size(0), tokens = query.size(1), height = rel_h.size(2), width = rel_w.size(2);
  TORCH_CHECK(height * width == tokens, "relative_attention: rel_h and rel_w do not match the tokens");
  auto output = torch::empty_like(query);
  auto key_t = key.transpose(1, 2).contiguous();
  const int64_t blocks = (tokens + rows - 1) / rows;
#pragma omp parallel num_threads(at::get_num_threads())
  {
    c10::InferenceMode inference;  // grad mode is per thread: the worker threads' must match the caller's
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < groups * blocks; ++task) {
      const int64_t group = task / blocks, start = (task % blocks) * rows, stop = std::min(tokens, start + rows);
      auto logits = at::mm(query[group].slice(0, start, stop), key_t[group]);
      logits.view({stop - start, height, width})
          .add_(rel_h[group].slice(0, start, stop).unsqueeze(2))
          .add_(rel_w[group].slice(0, start, stop).unsqueeze(1));
      at::_softmax_out(logits, logits, -1, false);
      auto rows_out = output[group].slice(0, start, stop);
      at::mm_out(rows_out, logits, value[group]);
    }
  }
  return output;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("relative_attention", &relative_attention); }
