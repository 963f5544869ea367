// The image encoder's CPU kernels (issue #22): attention with the decomposed relative-position bias, and the GELU MLP.
//
// Each runs one OpenMP region for the whole layer, over tasks handed out dynamically. A loop of ATen calls, or one
// large call, splits its work evenly between threads and waits for the slowest: when another process takes a core for
// a while, that thread is late and the layer with it. With dynamic tasks it only does fewer of them. A task's
// intermediate values (a block of attention logits, a block of MLP activations) are a few MiB that stay in cache and
// are never a large fresh allocation. The ATen calls inside a task run single-threaded (ATen does not nest parallel
// regions).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>

// softmax(query key^T * scale + rel_h[q, kh] + rel_w[q, kw]) value over (batch, head, block of query rows) tasks: each
// task computes its rows' logits, scales them and adds the bias in one pass, takes the softmax and multiplies by the
// values. query, key, value: (batch, heads, tokens, head_dim) float32 with unit stride along head_dim, read in place
// (views of the qkv projection's output); rel_h: (batch, heads, tokens, height) and rel_w: (batch, heads, tokens,
// width) contiguous, tokens = height * width. Returns a contiguous (batch, tokens, heads, head_dim) tensor, the layout
// the output projection reads.
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

// lin2(gelu(lin1(tokens))) over blocks of token rows: tokens (n, in) float32 contiguous; weight1 (hidden, in), bias1
// (hidden,), weight2 (out, hidden), bias2 (out,) as nn.Linear holds them; GELU the exact (erf) one. Returns (n, out).
torch::Tensor gelu_mlp(
    const torch::Tensor& tokens, const torch::Tensor& weight1, const torch::Tensor& bias1, const torch::Tensor& weight2,
    const torch::Tensor& bias2, int64_t rows) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.is_contiguous(), "gelu_mlp: tokens must be a contiguous (n, in) matrix");
  const int64_t count = tokens.size(0);
  auto output = torch::empty({count, weight2.size(0)}, tokens.options());
  const auto weight1_t = weight1.t(), weight2_t = weight2.t();
  const int64_t blocks = (count + rows - 1) / rows;
#pragma omp parallel num_threads(at::get_num_threads())
  {
    c10::InferenceMode inference;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < blocks; ++task) {
      const int64_t start = task * rows, stop = std::min(count, start + rows);
      auto hidden = at::addmm(bias1, tokens.slice(0, start, stop), weight1_t);
      at::gelu_(hidden);
      auto rows_out = output.slice(0, start, stop);
      at::addmm_out(rows_out, bias2, hidden, weight2_t);
    }
  }
  return output;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("relative_attention", &relative_attention);
  m.def("gelu_mlp", &gelu_mlp);
}
