// NTU RGB+D raw .skeleton parser: many files in parallel, GIL released.
//
// Mirrors fastskel/data/ntu.py line for line: the same grammar, the same error messages and line
// numbers, the same body selection (tracks by Kinect id, activity = sum over xyz of the population
// std with left-to-right float64 sums, the max_bodies most active kept, frames without any of them
// dropped), so the two implementations return bit-identical float32 arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace fastskel {
namespace {

struct ParseError {
  int64_t line;
  std::string msg;
};

struct Result {
  bool ok = false;
  std::string msg;
  int64_t line = 0;
  int64_t frames = 0;  // kept frames T
  std::vector<float> data;  // (3, T, J, M)
};

inline bool is_ws(char c) { return c == ' ' || c == '\t'; }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Match [+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? at p; returns the end or nullptr.
const char* match_number(const char* p, const char* end) {
  if (p < end && (*p == '+' || *p == '-')) ++p;
  const char* q = p;
  while (q < end && is_digit(*q)) ++q;
  bool int_digits = q > p;
  if (int_digits) {
    if (q < end && *q == '.') {
      ++q;
      while (q < end && is_digit(*q)) ++q;
    }
  } else {
    if (q < end && *q == '.') {
      const char* r = q + 1;
      while (r < end && is_digit(*r)) ++r;
      if (r == q + 1) return nullptr;
      q = r;
    } else {
      return nullptr;
    }
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    const char* r = q + 1;
    if (r < end && (*r == '+' || *r == '-')) ++r;
    const char* s = r;
    while (s < end && is_digit(*s)) ++s;
    if (s > r) q = s;
  }
  return q;
}

bool full_number(const char* b, const char* e) {
  const char* q = match_number(b, e);
  return q != nullptr && q == e;
}

bool full_digits(const char* b, const char* e) {
  if (b == e) return false;
  for (const char* p = b; p < e; ++p)
    if (!is_digit(*p)) return false;
  return true;
}

using Span = std::pair<const char*, const char*>;

// Split on spaces/tabs into out[0..cap); returns the token count (which may exceed cap).
size_t split_ws(const char* b, const char* e, Span* out, size_t cap) {
  size_t n = 0;
  const char* p = b;
  while (p < e) {
    while (p < e && is_ws(*p)) ++p;
    if (p >= e) break;
    const char* s = p;
    while (p < e && !is_ws(*p)) ++p;
    if (n < cap) out[n] = Span(s, p);
    ++n;
  }
  return n;
}

// One pass over a joint line: 12 numbers separated by spaces/tabs; the spans of the first 3 into
// xyz. false on any deviation (the caller then diagnoses the line).
bool scan_joint_line(const char* p, const char* e, Span* xyz) {
  for (int t = 0; t < 12; ++t) {
    const char* s = p;
    while (s < e && is_ws(*s)) ++s;
    if (t > 0 && s == p) return false;  // numbers must be separated
    const char* q = match_number(s, e);
    if (q == nullptr || (q < e && !is_ws(*q))) return false;
    if (t < 3) xyz[t] = Span(s, q);
    p = q;
  }
  while (p < e && is_ws(*p)) ++p;
  return p == e;
}

std::vector<Span> tokens(const char* b, const char* e) {
  std::vector<Span> out;
  size_t n = split_ws(b, e, nullptr, 0);
  out.resize(n);
  split_ws(b, e, out.data(), n);
  return out;
}

std::string diagnose(const char* b, const char* e, size_t expected, bool first_int) {
  auto toks = tokens(b, e);
  if (toks.size() != expected)
    return "expected " + std::to_string(expected) + " fields, got " + std::to_string(toks.size());
  for (size_t i = 0; i < toks.size(); ++i) {
    std::string tok(toks[i].first, toks[i].second);
    if (i == 0 && first_int) {
      if (!full_digits(toks[i].first, toks[i].second))
        return "field 1 (body id) is not a non-negative integer: '" + tok + "'";
    } else if (!full_number(toks[i].first, toks[i].second)) {
      return "field " + std::to_string(i + 1) + " is not a number: '" + tok + "'";
    }
  }
  return "malformed line";
}

// Correctly rounded decimal -> double (from_chars; strtod for over/underflow). false when the value
// does not fit a float32 (it would round to inf).
bool to_double(const char* b, const char* e, double* out) {
  if (*b == '+') ++b;
  auto res = std::from_chars(b, e, *out, std::chars_format::general);
  if (!(res.ec == std::errc() && res.ptr == e)) {
    std::string s(b, e);
    errno = 0;
    *out = std::strtod(s.c_str(), nullptr);
  }
  return std::isfinite(static_cast<float>(*out));
}

std::string strip_ws(const char* b, const char* e) {
  while (b < e && is_ws(*b)) ++b;
  while (e > b && is_ws(e[-1])) --e;
  return std::string(b, e);
}

struct Lines {
  std::vector<std::pair<const char*, const char*>> v;
  explicit Lines(const std::string& text) {
    const char* p = text.data();
    const char* end = p + text.size();
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      const char* le = nl ? nl : end;
      const char* ce = (le > p && le[-1] == '\r') ? le - 1 : le;
      v.emplace_back(p, ce);
      p = nl ? nl + 1 : end;
    }
  }
};

struct Track {
  std::vector<int64_t> frames;
  std::vector<double> xyz;  // (F_k, J, 3)
};

struct Parser {
  const std::string& path;
  const Lines& L;
  int64_t J;
  size_t pos = 0;

  // `what` is a callable building the description; it only runs on error.
  template <class W>
  const Span& need(const W& what) {
    if (pos >= L.v.size())
      throw ParseError{static_cast<int64_t>(L.v.size()) + 1, "unexpected end of file: expected " + what()};
    return L.v[pos];
  }

  template <class W>
  int64_t read_int(const W& what) {
    const auto& ln = need(what);
    const char* b = ln.first;
    const char* e = ln.second;
    while (b < e && is_ws(*b)) ++b;
    const char* d = b;
    while (d < e && is_digit(*d)) ++d;
    const char* t = d;
    while (t < e && is_ws(*t)) ++t;
    if (d == b || t != e)
      throw ParseError{static_cast<int64_t>(pos) + 1,
                       "expected " + what() + " (a non-negative integer), got '" + strip_ws(ln.first, ln.second) + "'"};
    const char* nz = b;
    while (nz + 1 < d && *nz == '0') ++nz;  // leading zeros do not count toward the size limit
    if (d - nz > 7)
      throw ParseError{static_cast<int64_t>(pos) + 1, what() + ": value too large: '" + std::string(b, d) + "'"};
    int64_t v = 0;
    for (const char* p = nz; p < d; ++p) v = v * 10 + (*p - '0');
    if (v > 1000000)
      throw ParseError{static_cast<int64_t>(pos) + 1, what() + ": value too large: '" + std::string(b, d) + "'"};
    ++pos;
    return v;
  }
};

double sequential_std(const std::vector<double>& xyz, size_t count, int c) {
  double s = 0.0;
  for (size_t i = 0; i < count; ++i) s = s + xyz[3 * i + c];
  const double mean = s / static_cast<double>(count);
  double q = 0.0;
  for (size_t i = 0; i < count; ++i) {
    const double d = xyz[3 * i + c] - mean;
    const double dd = d * d;
    q = q + dd;
  }
  return std::sqrt(q / static_cast<double>(count));
}

void parse_file(const std::string& path, int64_t max_bodies, int64_t J, Result* res) {
  std::string text;
  {
    errno = 0;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
      res->line = 0;
      res->msg = std::string("cannot read: ") + std::strerror(errno);
      return;
    }
    if (std::fseek(f, 0, SEEK_END) == 0) {
      long size = std::ftell(f);
      if (size > 0) text.reserve(static_cast<size_t>(size));
      std::rewind(f);
    }
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
    if (std::ferror(f)) {
      int err = errno;
      std::fclose(f);
      res->line = 0;
      res->msg = std::string("cannot read: ") + std::strerror(err);
      return;
    }
    std::fclose(f);
  }
  size_t first_high = text.size();
  {
    const size_t n8 = text.size() / 8;
    for (size_t w = 0; w < n8; ++w) {
      uint64_t word;
      std::memcpy(&word, text.data() + 8 * w, 8);
      if (word & 0x8080808080808080ULL) {
        first_high = 8 * w;
        break;
      }
    }
    if (first_high == text.size()) first_high = 8 * n8;
  }
  for (size_t i = first_high; i < text.size(); ++i) {
    unsigned char ch = static_cast<unsigned char>(text[i]);
    if (ch >= 0x80) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "%02x", ch);
      res->line = static_cast<int64_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(i), '\n')) + 1;
      res->msg = std::string("non-ASCII byte 0x") + hex;
      return;
    }
  }
  Lines lines(text);
  if (lines.v.empty()) {
    res->line = 0;
    res->msg = "empty file";
    return;
  }
  Parser P{path, lines, J};
  std::vector<Track> tracks;
  std::unordered_map<std::string, size_t> track_of;
  int64_t F = 0;
  try {
    F = P.read_int([] { return std::string("the frame count"); });
    std::unordered_map<std::string, int> seen;
    Span tok[12];
    for (int64_t fi = 0; fi < F; ++fi) {
      auto fs = [fi] { return std::to_string(fi + 1); };
      int64_t B = P.read_int([&] { return "the body count of frame " + fs() + "/" + std::to_string(F); });
      seen.clear();
      for (int64_t bi = 0; bi < B; ++bi) {
        auto bs = [bi] { return std::to_string(bi + 1); };
        const auto& info = P.need([&] { return "the info line of body " + bs() + " in frame " + fs(); });
        size_t nt = split_ws(info.first, info.second, tok, 10);
        bool ok = nt == 10 && full_digits(tok[0].first, tok[0].second);
        for (size_t t = 1; ok && t < nt; ++t) ok = full_number(tok[t].first, tok[t].second);
        if (!ok)
          throw ParseError{static_cast<int64_t>(P.pos) + 1,
                           "body info line: " + diagnose(info.first, info.second, 10, true)};
        std::string id(tok[0].first, tok[0].second);
        ++P.pos;
        int64_t nj = P.read_int([&] { return "the joint count of body " + bs() + " in frame " + fs(); });
        if (nj != J)
          throw ParseError{static_cast<int64_t>(P.pos), "expected " + std::to_string(J) + " joints, got " + std::to_string(nj)};
        int k = seen[id]++;
        std::string key = id + "#" + std::to_string(k);
        auto it = track_of.find(key);
        size_t ti;
        if (it == track_of.end()) {
          ti = tracks.size();
          track_of.emplace(key, ti);
          tracks.emplace_back();
        } else {
          ti = it->second;
        }
        Track& tr = tracks[ti];
        tr.frames.push_back(fi);
        for (int64_t j = 0; j < J; ++j) {
          const auto& jl = P.need([&] {
            return "joint " + std::to_string(j + 1) + "/" + std::to_string(J) + " of body " + bs() + " in frame " + fs();
          });
          if (!scan_joint_line(jl.first, jl.second, tok))
            throw ParseError{static_cast<int64_t>(P.pos) + 1, "joint line: " + diagnose(jl.first, jl.second, 12, false)};
          for (int c = 0; c < 3; ++c) {
            double v;
            if (!to_double(tok[c].first, tok[c].second, &v))
              throw ParseError{static_cast<int64_t>(P.pos) + 1,
                               "joint line: field " + std::to_string(c + 1) + " is out of the float32 range: '" +
                                   std::string(tok[c].first, tok[c].second) + "'"};
            tr.xyz.push_back(v);
          }
          ++P.pos;
        }
      }
    }
    while (P.pos < lines.v.size()) {
      const auto& ln = lines.v[P.pos];
      for (const char* p = ln.first; p < ln.second; ++p)
        if (!is_ws(*p))
          throw ParseError{static_cast<int64_t>(P.pos) + 1,
                           "unexpected data after the last of " + std::to_string(F) + " frames"};
      ++P.pos;
    }
  } catch (const ParseError& e) {
    res->line = e.line;
    res->msg = e.msg;
    return;
  }
  if (tracks.empty()) {
    res->line = 0;
    res->msg = "no body in any of the " + std::to_string(F) + " frames";
    return;
  }
  // activity and selection
  std::vector<double> energy(tracks.size());
  for (size_t t = 0; t < tracks.size(); ++t) {
    const size_t count = tracks[t].frames.size() * static_cast<size_t>(J);
    double e = 0.0;
    for (int c = 0; c < 3; ++c) e = e + sequential_std(tracks[t].xyz, count, c);
    energy[t] = e;
  }
  std::vector<size_t> order(tracks.size());
  for (size_t t = 0; t < order.size(); ++t) order[t] = t;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return -energy[a] < -energy[b]; });
  const size_t M = static_cast<size_t>(max_bodies);
  if (order.size() > M) order.resize(M);
  std::vector<int64_t> index(static_cast<size_t>(F), -1);
  for (size_t t : order)
    for (int64_t fi : tracks[t].frames) index[static_cast<size_t>(fi)] = 0;
  int64_t T = 0;
  for (auto& v : index)
    if (v == 0) v = T++;
  res->frames = T;
  res->data.assign(static_cast<size_t>(3 * T * J) * M, 0.0f);
  for (size_t m = 0; m < order.size(); ++m) {
    const Track& tr = tracks[order[m]];
    for (size_t k = 0; k < tr.frames.size(); ++k) {
      const int64_t t = index[static_cast<size_t>(tr.frames[k])];
      for (int64_t j = 0; j < J; ++j)
        for (int c = 0; c < 3; ++c)
          res->data[((static_cast<size_t>(c) * T + t) * J + j) * M + m] =
              static_cast<float>(tr.xyz[(k * static_cast<size_t>(J) + j) * 3 + c]);
    }
  }
  res->ok = true;
}

}  // namespace

py::list read_ntu_skeletons(const std::vector<std::string>& paths, int64_t num_threads, int64_t max_bodies,
                            int64_t num_joints) {
  if (max_bodies < 1 || num_joints < 1) throw std::invalid_argument("max_bodies and num_joints must be >= 1");
  std::vector<Result> results(paths.size());
  {
    py::gil_scoped_release release;
    int64_t hw = static_cast<int64_t>(std::thread::hardware_concurrency());
    int64_t n = num_threads > 0 ? num_threads : std::max<int64_t>(hw, 1);
    n = std::min<int64_t>(n, static_cast<int64_t>(paths.size()));
    std::atomic<size_t> next{0};
    auto work = [&]() {
      for (size_t i = next++; i < paths.size(); i = next++) parse_file(paths[i], max_bodies, num_joints, &results[i]);
    };
    if (n <= 1) {
      work();
    } else {
      std::vector<std::thread> pool;
      for (int64_t t = 0; t < n; ++t) pool.emplace_back(work);
      for (auto& th : pool) th.join();
    }
  }
  py::list out;
  for (auto& r : results) {
    if (r.ok) {
      py::array_t<float> arr({static_cast<py::ssize_t>(3), static_cast<py::ssize_t>(r.frames),
                              static_cast<py::ssize_t>(num_joints), static_cast<py::ssize_t>(max_bodies)});
      if (!r.data.empty()) std::memcpy(arr.mutable_data(), r.data.data(), r.data.size() * sizeof(float));
      out.append(py::make_tuple(true, arr, std::string(), 0));
    } else {
      out.append(py::make_tuple(false, py::none(), r.msg, r.line));
    }
    std::vector<float>().swap(r.data);
  }
  return out;
}

}  // namespace fastskel
