// The image encoder's CPU kernels (issue #22): whole ViT blocks, and a block's attention with the decomposed
// relative-position bias and its GELU MLP for layers that the block kernels cannot run (quantised or adapted ones).
//
// Each parallel region covers a whole step of a layer, over tasks handed out dynamically. A loop of ATen calls, or one
// large call, splits its work evenly between threads and waits for the slowest: when another process takes a core for
// a while, that thread is late and the layer with it. With dynamic tasks it only does fewer of them. A task's
// intermediate values (a window's activations, a block of attention logits or MLP activations) are a few MiB that stay
// in cache and are never a large fresh allocation. The ATen calls inside a task run single-threaded (ATen does not
// nest parallel regions).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <vector>

using torch::Tensor;

// Runs task(0) ... task(count - 1) on ATen's threads, handed out one at a time.
template <typename Task>
static void parallel_tasks(int64_t count, const Task& task) {
#pragma omp parallel num_threads(at::get_num_threads())
  {
    c10::InferenceMode inference;  // grad mode is per thread: the worker threads' must match the caller's
#pragma omp for schedule(dynamic, 1)
    for (int64_t index = 0; index < count; ++index) task(index);
  }
}

// softmax(query key^T * scale + rel_h[q, kh] + rel_w[q, kw]) value for a band of query grid rows of one head, written
// to `output` (rows * width, head_dim). The bias is the query's dot product with the embeddings of its offsets to each
// key row and column; the logits are scaled and biased in one pass, in cache. query: (rows, width, head_dim); key and
// value: (height * width, head_dim); table_h: the band's (rows, height, head_dim) rows of the (query row, key row)
// offset embeddings; table_w: (width, width, head_dim). Any strides with a unit one along head_dim.
static void attend_band(const Tensor& query, const Tensor& key, const Tensor& value, const Tensor& table_h,
                        const Tensor& table_w, Tensor output) {
  const int64_t rows = query.size(0), width = query.size(1), head_dim = query.size(2), height = table_h.size(1);
  const auto rel_h = at::bmm(query, table_h.transpose(1, 2));  // (rows, width, height)
  const auto rel_w = at::bmm(query.transpose(0, 1), table_w.transpose(1, 2)).transpose(0, 1).contiguous();
  const auto flat_query = query.reshape({rows * width, head_dim});
  auto logits = at::mm(flat_query, key.t());  // (rows * width, height * width)
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  float* logit = logits.data_ptr<float>();
  const float* bias_h = rel_h.data_ptr<float>();
  const float* bias_w = rel_w.data_ptr<float>();
  for (int64_t row = 0; row < rows * width; ++row, bias_h += height, bias_w += width) {
    for (int64_t kh = 0; kh < height; ++kh, logit += width) {
      for (int64_t kw = 0; kw < width; ++kw) logit[kw] = logit[kw] * scale + bias_h[kh] + bias_w[kw];
    }
  }
  at::_softmax_out(logits, logits, -1, false);
  at::mm_out(output, logits, value);
}

// The weights of a ViT block, as nn.LayerNorm and nn.Linear hold them (a qkv layer without bias passes zeros).
struct BlockWeights {
  Tensor norm1_weight, norm1_bias, qkv_t, qkv_bias, proj_t, proj_bias, norm2_weight, norm2_bias, lin1_t, lin1_bias,
      lin2_t, lin2_bias;
  double norm1_eps, norm2_eps;

  BlockWeights(const std::vector<Tensor>& w, double eps1, double eps2)
      : norm1_weight(w.at(0)), norm1_bias(w.at(1)), qkv_t(w.at(2).t()), qkv_bias(w.at(3)), proj_t(w.at(4).t()),
        proj_bias(w.at(5)), norm2_weight(w.at(6)), norm2_bias(w.at(7)), lin1_t(w.at(8).t()), lin1_bias(w.at(9)),
        lin2_t(w.at(10).t()), lin2_bias(w.at(11)), norm1_eps(eps1), norm2_eps(eps2) {
    TORCH_CHECK(w.size() == 12, "BlockWeights: expected 12 tensors, got ", w.size());
  }

  // qkv(norm1(tokens)): (n, channels) -> (n, 3 * inner).
  Tensor qkv(const Tensor& tokens) const {
    return at::addmm(qkv_bias, at::layer_norm(tokens, {tokens.size(1)}, norm1_weight, norm1_bias, norm1_eps), qkv_t);
  }

  // The block after attention, h + lin2(gelu(lin1(norm2(h)))) with h = residual + proj(attended): attended (n, inner)
  // and residual (n, channels) -> (n, channels).
  Tensor tail(const Tensor& attended, const Tensor& residual) const {
    auto hidden = at::addmm(proj_bias, attended, proj_t).add_(residual);
    auto expanded = at::addmm(lin1_bias, norm2(hidden), lin1_t);
    at::gelu_(expanded);
    return hidden.add_(at::addmm(lin2_bias, expanded, lin2_t));
  }

  Tensor norm2(const Tensor& hidden) const {
    return at::layer_norm(hidden, {hidden.size(1)}, norm2_weight, norm2_bias, norm2_eps);
  }
};

// Attention with the decomposed relative-position bias over (batch, head, band of query grid rows) tasks. query, key,
// value: (batch, heads, height * width, head_dim) float32 with unit stride along head_dim, read in place (views of
// the qkv projection's output); table_h: (height, height, head_dim) and table_w: (width, width, head_dim) embeddings
// of every (query, key) row and column offset; band_rows: grid rows per task. Returns a contiguous (batch, tokens,
// heads, head_dim) tensor, the layout the output projection reads.
Tensor relative_attention(const Tensor& query, const Tensor& key, const Tensor& value, const Tensor& table_h,
                          const Tensor& table_w, int64_t band_rows) {
  const int64_t batch = query.size(0), heads = query.size(1), tokens = query.size(2), head_dim = query.size(3);
  const int64_t height = table_h.size(0), width = table_w.size(0);
  TORCH_CHECK(height * width == tokens, "relative_attention: the tables do not match the tokens");
  TORCH_CHECK(query.stride(3) == 1 && key.stride(3) == 1 && value.stride(3) == 1,
              "relative_attention: query, key and value need unit stride along head_dim");
  auto output = torch::empty({batch, tokens, heads, head_dim}, query.options());
  const int64_t bands = (height + band_rows - 1) / band_rows;
  parallel_tasks(batch * heads * bands, [&](int64_t task) {
    const int64_t b = task / (heads * bands), h = task / bands % heads;
    const int64_t top = task % bands * band_rows, rows = std::min(band_rows, height - top);
    const auto band = query[b][h].slice(0, top * width, (top + rows) * width).view({rows, width, head_dim});
    attend_band(band, key[b][h], value[b][h], table_h.slice(0, top, top + rows), table_w,
                output[b].slice(0, top * width, (top + rows) * width).select(1, h));
  });
  return output.transpose(1, 2);
}

// lin2(gelu(lin1(tokens))) over blocks of token rows: tokens (n, in) float32 contiguous; weight1 (hidden, in), bias1
// (hidden,), weight2 (out, hidden), bias2 (out,) as nn.Linear holds them; GELU the exact (erf) one. Returns (n, out).
Tensor gelu_mlp(const Tensor& tokens, const Tensor& weight1, const Tensor& bias1, const Tensor& weight2,
                const Tensor& bias2, int64_t rows) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.is_contiguous(), "gelu_mlp: tokens must be a contiguous (n, in) matrix");
  const int64_t count = tokens.size(0);
  auto output = torch::empty({count, weight2.size(0)}, tokens.options());
  const auto weight1_t = weight1.t(), weight2_t = weight2.t();
  parallel_tasks((count + rows - 1) / rows, [&](int64_t task) {
    const int64_t start = task * rows, stop = std::min(count, start + rows);
    auto hidden = at::addmm(bias1, tokens.slice(0, start, stop), weight1_t);
    at::gelu_(hidden);
    auto rows_out = output.slice(0, start, stop);
    at::addmm_out(rows_out, bias2, hidden, weight2_t);
  });
  return output;
}

// One windowed ViT block, x + mlp(norm2(x + proj(attention(norm1(x))))) with attention within windows, over (batch,
// window) tasks: a window's tokens go through the whole block in cache, and the layer is one parallel region. As in
// the official model the grid is padded to whole windows after norm1 and the padding takes part in attention: a padded
// token's qkv is the projection of zero, the qkv bias. x: (batch, height, width, channels) contiguous; weights: see
// BlockWeights; table_h and table_w: (window, window, head_dim) offset embeddings. Returns x's shape.
Tensor windowed_block(const Tensor& x, const std::vector<Tensor>& weights, double norm1_eps, double norm2_eps,
                      const Tensor& table_h, const Tensor& table_w, int64_t heads) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "windowed_block: x must be a contiguous (b, h, w, c) tensor");
  const BlockWeights block(weights, norm1_eps, norm2_eps);
  const int64_t batch = x.size(0), height = x.size(1), width = x.size(2), channels = x.size(3);
  const int64_t window = table_h.size(0), tokens = window * window, inner = block.qkv_bias.size(0) / 3;
  const int64_t head_dim = inner / heads;
  const int64_t windows_h = (height + window - 1) / window, windows_w = (width + window - 1) / window;
  auto output = torch::empty_like(x);
  parallel_tasks(batch * windows_h * windows_w, [&](int64_t task) {
    const int64_t b = task / (windows_h * windows_w), top = task / windows_w % windows_h * window;
    const int64_t left = task % windows_w * window;
    const int64_t rows = std::min(window, height - top), columns = std::min(window, width - left);
    auto region = [&](const Tensor& grid) { return grid[b].slice(0, top, top + rows).slice(1, left, left + columns); };
    const auto residual = region(x).reshape({rows * columns, channels});
    auto qkv = block.qkv(residual);
    if (rows < window || columns < window) {
      auto padded = block.qkv_bias.expand({tokens, 3 * inner}).clone();
      padded.view({window, window, 3 * inner}).slice(0, 0, rows).slice(1, 0, columns).copy_(
          qkv.view({rows, columns, 3 * inner}));
      qkv = padded;
    }
    const auto qkv_heads = qkv.view({window, window, 3, heads, head_dim});
    const auto key_value = qkv.view({tokens, 3, heads, head_dim});
    auto attended = torch::empty({tokens, heads, head_dim}, x.options());
    for (int64_t h = 0; h < heads; ++h) {
      attend_band(qkv_heads.select(2, 0).select(2, h), key_value.select(1, 1).select(1, h),
                  key_value.select(1, 2).select(1, h), table_h, table_w, attended.select(1, h));
    }
    const auto cropped = attended.view({window, window, inner}).slice(0, 0, rows).slice(1, 0, columns);
    const auto hidden = block.tail(cropped.reshape({rows * columns, inner}), residual);
    region(output).copy_(hidden.view({rows, columns, channels}));
  });
  return output;
}

// One global ViT block in three parallel regions: norm1 and qkv over blocks of tokens, attention over (batch, head,
// band of query grid rows), and the rest of the block over blocks of tokens. x: (batch, height, width, channels)
// contiguous; weights: see BlockWeights; table_h: (height, height, head_dim), table_w: (width, width, head_dim).
// Returns x's shape.
Tensor global_block(const Tensor& x, const std::vector<Tensor>& weights, double norm1_eps, double norm2_eps,
                    const Tensor& table_h, const Tensor& table_w, int64_t heads, int64_t band_rows,
                    int64_t token_rows) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "global_block: x must be a contiguous (b, h, w, c) tensor");
  const BlockWeights block(weights, norm1_eps, norm2_eps);
  const int64_t batch = x.size(0), height = x.size(1), width = x.size(2), channels = x.size(3);
  const int64_t tokens = batch * height * width, inner = block.qkv_bias.size(0) / 3, head_dim = inner / heads;
  const auto flat = x.view({tokens, channels});
  const int64_t blocks = (tokens + token_rows - 1) / token_rows;
  auto token_block = [&](const Tensor& matrix, int64_t task) {
    return matrix.slice(0, task * token_rows, std::min(tokens, (task + 1) * token_rows));
  };
  auto qkv = torch::empty({tokens, 3 * inner}, x.options());
  parallel_tasks(blocks, [&](int64_t task) { token_block(qkv, task).copy_(block.qkv(token_block(flat, task))); });
  const auto grid = qkv.view({batch, height * width, 3, heads, head_dim}).permute({2, 0, 3, 1, 4});
  const auto attended = relative_attention(grid[0], grid[1], grid[2], table_h, table_w, band_rows)
                            .transpose(1, 2)
                            .reshape({tokens, inner});
  auto output = torch::empty_like(x);
  const auto flat_output = output.view({tokens, channels});
  parallel_tasks(blocks, [&](int64_t task) {
    token_block(flat_output, task).copy_(block.tail(token_block(attended, task), token_block(flat, task)));
  });
  return output;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("relative_attention", &relative_attention);
  m.def("gelu_mlp", &gelu_mlp);
  m.def("windowed_block", &windowed_block);
  m.def("global_block", &global_block);
}
