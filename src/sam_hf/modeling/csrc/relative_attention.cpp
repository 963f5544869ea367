// Softmax attention with the decomposed relative-position bias of SAM's image encoder, fused for the CPU (issue #22).
//
// One OpenMP region for the whole layer: its tasks are (batch, head, block of query rows) triples handed out
// dynamically, and each task computes its rows' logits (rows x keys, a few MiB that stay in cache), scales them and
// adds the bias rel_h[q, kh] + rel_w[q, kw] in one pass, takes the softmax and multiplies by the values. A loop of
// small ATen calls opens one parallel region per call, and each waits for its slowest thread; with one region and
// dynamic scheduling, a thread that the operating system takes away for a while (another busy process) only does fewer
// tasks. The ATen calls inside a task run single-threaded (ATen does not nest parallel regions).
//
// Queries, keys and values are read where the qkv projection left them (strided views, no copies) and the output is
// written in the (batch, tokens, heads, head_dim) layout that the output projection reads.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>

// query, key, value: (batch, heads, tokens, head_dim) float32 with unit stride along head_dim (views of one qkv tensor);
// rel_h: (batch, heads, tokens, height) and rel_w: (batch, heads, tokens, width) contiguous, tokens = height * width.
// Returns the attention output as a contiguous (batch, tokens, heads, head_dim) tensor.
torch::Tensor relative_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value, const torch::Tensor& rel_h,
    const torch::Tensor& rel_w, double scale, int64_t rows) {
  const int64_t batch = query.size(0), heads = query.size(1), tokens = query.size(2), head_dim = query.size(3);
  const int64_t height = rel_h.size(3), width = rel_w.size(3);
  TORCH_CHECK(height * width == tokens, "relative_attention: rel_h and rel_w do not match the tokens");
  TORCH_CHECK(rel_h.is_contiguous() && rel_w.is_contiguous(), "relative_attention: rel_h and rel_w must be contiguous");
  TORCH_CHECK(query.stride(3) == 1 && key.stride(3) == 1 && value.stride(3) == 1,
              "relative_attention: query, key and value need unit stride along head_dim");
  auto output = torch::empty({batch, tokens, heads, head_dim}, query.options());
  auto output_heads = output.transpose(1, 2);
  const int64_t blocks = (tokens + rows - 1) / rows;
  const float logit_scale = static_cast<float>(scale);
#pragma omp parallel num_threads(at::get_num_threads())
  {
    c10::InferenceMode inference;  // grad mode is per thread: the worker threads' must match the caller's
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < batch * heads * blocks; ++task) {
      const int64_t group = task / blocks, b = group / heads, h = group % heads;
      const int64_t start = (task % blocks) * rows, stop = std::min(tokens, start + rows);
      auto logits = at::mm(query[b][h].slice(0, start, stop), key[b][h].t());  // (stop - start, tokens)
      float* logit = logits.data_ptr<float>();
      const float* bias_h = rel_h[b][h].data_ptr<float>() + start * height;
      const float* bias_w = rel_w[b][h].data_ptr<float>() + start * width;
      for (int64_t row = 0; row < stop - start; ++row, bias_h += height, bias_w += width) {
        for (int64_t kh = 0; kh < height; ++kh, logit += width) {
          for (int64_t kw = 0; kw < width; ++kw) logit[kw] = logit[kw] * logit_scale + bias_h[kh] + bias_w[kw];
        }
      }
      at::_softmax_out(logits, logits, -1, false);
      auto rows_out = output_heads[b][h].slice(0, start, stop);
      at::mm_out(rows_out, logits, value[b][h]);
    }
  }
  return output;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("relative_attention", &relative_attention); }
