// Per-image kernels for the data pipeline's Python stage, called through ctypes (which releases the GIL, so the
// pipeline's worker threads run them in parallel): Pillow's affine resampling (bilinear and bicubic, as
// Image.transform computes it, to the bit) and normalisation of an HWC uint8 image into a CHW float32 one.
//
// The affine kernel repeats Pillow's double-precision arithmetic operation for operation (libImaging/Geometry.c;
// compiled without fused multiply-adds, see cpu_kernels.py) so that its pixels equal Pillow's: the sample point
// of output pixel (x, y) is a * (x + 0.5, y + 0.5, 1); a point outside the input keeps the fill colour; near the
// border the taps are clamped as Pillow clamps them. Two shortcuts leave the result unchanged: where the
// fractional offset along an axis is exactly 0 the interpolation along it returns the middle tap, so shears and
// translations (one offset is 0 on every pixel) interpolate along one axis only.
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// An RGB pixel (and an unused lane) as four doubles: each lane gets the IEEE operations Pillow's scalar code
// applies to its channel, so the results are the same.
typedef double Double4 __attribute__((vector_size(32)));
typedef float Float4 __attribute__((vector_size(16)));
typedef int32_t Int4 __attribute__((vector_size(16)));

inline int64_t Floor(double v) { return v < 0.0 ? static_cast<int64_t>(std::floor(v)) : static_cast<int64_t>(v); }

inline int64_t Clamp(int64_t i, int64_t size) { return i < 0 ? 0 : (i < size ? i : size - 1); }

// Pillow's cubic convolution (a = -0.5) through four samples at offset d in [0, 1), in its order of operations.
// With d == 0 it returns v2, as Pillow's formula does (v2 + 0 * finite).
inline Double4 Cubic(Double4 v1, Double4 v2, Double4 v3, Double4 v4, double d) {
  if (d == 0.0) return v2;
  const Double4 p1 = v2;
  const Double4 p2 = -v1 + v3;
  const Double4 p3 = 2 * (v1 - v2) + v3 - v4;
  const Double4 p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

inline Double4 Linear(Double4 a, Double4 b, double d) { return a + (b - a) * d; }

// Pillow's conversion of an interpolated value to a byte: clipped to [0, 255], then truncated.
inline void StoreRgb(Double4 v, uint8_t *out) {
  const Double4 zero = {0, 0, 0, 0}, top = {255, 255, 255, 255};
  v = v <= zero ? zero : (v >= top ? top : v);
  const Int4 bytes = __builtin_convertvector(v, Int4);
  for (int c = 0; c < 3; ++c) out[c] = static_cast<uint8_t>(bytes[c]);
}

// An RGB image with each pixel as four floats (exact for bytes), so that one load and one conversion give
// all the channels of a tap.
struct PaddedImage {
  std::vector<Float4> pixels;
  int64_t height, width;

  PaddedImage(const uint8_t *rgb, int64_t height, int64_t width)
      : pixels(height * width), height(height), width(width) {
    for (int64_t p = 0; p < height * width; ++p, rgb += 3) {
      const Int4 values = {rgb[0], rgb[1], rgb[2], 0};
      pixels[p] = __builtin_convertvector(values, Float4);
    }
  }

  const Float4 *Row(int64_t y) const { return pixels.data() + y * width; }

  static Double4 Load(const Float4 *row, int64_t x) { return __builtin_convertvector(row[x], Double4); }
};

// Pillow's bicubic_filter32RGB at (xs, ys), the sample point less 0.5: the first row is clamped, rows past
// the bottom repeat the previous row's value.
Double4 Bicubic(const PaddedImage &image, double xs, double ys) {
  const int64_t x = Floor(xs) - 1, y = Floor(ys) - 1;
  const double dx = xs - (x + 1), dy = ys - (y + 1);
  int64_t columns[4];
  for (int k = 0; k < 4; ++k) columns[k] = Clamp(x + k, image.width);
  auto along_row = [&](const Float4 *row) {
    if (dx == 0.0) return PaddedImage::Load(row, columns[1]);
    return Cubic(PaddedImage::Load(row, columns[0]), PaddedImage::Load(row, columns[1]),
                 PaddedImage::Load(row, columns[2]), PaddedImage::Load(row, columns[3]), dx);
  };
  auto row_valid = [&](int k) { return y + k >= 0 && y + k < image.height; };
  if (dy == 0.0) return along_row(image.Row(row_valid(1) ? y + 1 : Clamp(y, image.height)));  // Cubic's v2
  const Double4 v1 = along_row(image.Row(Clamp(y, image.height)));
  const Double4 v2 = row_valid(1) ? along_row(image.Row(y + 1)) : v1;
  const Double4 v3 = row_valid(2) ? along_row(image.Row(y + 2)) : v2;
  const Double4 v4 = row_valid(3) ? along_row(image.Row(y + 3)) : v3;
  return Cubic(v1, v2, v3, v4, dy);
}

// Pillow's bilinear_filter32RGB at (xs, ys), the sample point less 0.5.
Double4 Bilinear(const PaddedImage &image, double xs, double ys) {
  const int64_t x = Floor(xs), y = Floor(ys);
  const double dx = xs - x, dy = ys - y;
  const int64_t x0 = Clamp(x, image.width), x1 = Clamp(x + 1, image.width);
  const Float4 *top = image.Row(Clamp(y, image.height));
  const Double4 v1 = Linear(PaddedImage::Load(top, x0), PaddedImage::Load(top, x1), dx);
  if (y + 1 < 0 || y + 1 >= image.height) return Linear(v1, v1, dy);
  const Float4 *bottom = image.Row(y + 1);
  return Linear(v1, Linear(PaddedImage::Load(bottom, x0), PaddedImage::Load(bottom, x1), dx), dy);
}

}  // namespace

extern "C" {

// out (height, width, 3) = the RGB image resampled at matrix * (x + 0.5, y + 0.5, 1), as Pillow's
// Image.transform(size, AFFINE, matrix, resample=BILINEAR (bicubic == 0) or BICUBIC, fillcolor=fill).
void AffineResampleRgb(const uint8_t *rgb, int64_t height, int64_t width, const double *matrix, int32_t bicubic,
                       const uint8_t *fill, uint8_t *out) {
  const PaddedImage image(rgb, height, width);
  const double a0 = matrix[0], a1 = matrix[1], a2 = matrix[2], a3 = matrix[3], a4 = matrix[4], a5 = matrix[5];
  for (int64_t y = 0; y < height; ++y) {
    const double yc = y + 0.5;
    for (int64_t x = 0; x < width; ++x, out += 3) {
      const double xc = x + 0.5;
      const double xin = a0 * xc + a1 * yc + a2;
      const double yin = a3 * xc + a4 * yc + a5;
      if (xin < 0.0 || xin >= width || yin < 0.0 || yin >= height) {
        for (int c = 0; c < 3; ++c) out[c] = fill[c];
      } else {
        StoreRgb(bicubic ? Bicubic(image, xin - 0.5, yin - 0.5) : Bilinear(image, xin - 0.5, yin - 0.5), out);
      }
    }
  }
}

// out (channels, height * width) = (image (height * width, channels) - mean) / std, per channel.
void NormalizeToChw(const uint8_t *image, int64_t pixels, int64_t channels, const float *mean, const float *std,
                    float *out) {
  for (int64_t c = 0; c < channels; ++c) {
    const float m = mean[c], s = std[c];
    const uint8_t *in = image + c;
    float *plane = out + c * pixels;
#pragma omp simd
    for (int64_t p = 0; p < pixels; ++p) plane[p] = (static_cast<float>(in[p * channels]) - m) / s;
  }
}

}  // extern "C"
