#include "bench/growth.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/plots.h"
#include "bench/workloads.h"

namespace walship::bench {
namespace {

namespace fs = std::filesystem;

struct Point {
  std::string factor;  // "base", "keys", "values", "followers", "clients"
  uint64_t keys = 200000;
  size_t value_size = 100;
  int followers = 2;
  size_t clients = 1;

  double Value(const std::string& f) const {
    if (f == "keys") return static_cast<double>(keys);
    if (f == "values") return static_cast<double>(value_size);
    if (f == "followers") return followers;
    return static_cast<double>(clients);
  }
  std::string Name() const {
    return factor == "base" ? "base"
                            : absl::StrCat(factor, ":", static_cast<uint64_t>(Value(factor)));
  }
};

constexpr const char* kFactors[] = {"keys", "values", "followers", "clients"};

std::vector<Point> Points(double scale) {
  auto keys = [scale](uint64_t n) {
    return std::max<uint64_t>(1000, static_cast<uint64_t>(static_cast<double>(n) * scale));
  };
  Point base{"base", keys(200000)};
  std::vector<Point> out = {base};
  for (uint64_t k : {2000000, 10000000}) {
    Point p = base;
    p.factor = "keys";
    p.keys = keys(k);
    out.push_back(p);
  }
  for (size_t v : {1024, 16384}) {
    Point p = base;
    p.factor = "values";
    p.value_size = v;
    out.push_back(p);
  }
  for (int f : {1, 4}) {
    Point p = base;
    p.factor = "followers";
    p.followers = f;
    out.push_back(p);
  }
  for (size_t c : {4, 16}) {
    Point p = base;
    p.factor = "clients";
    p.clients = c;
    out.push_back(p);
  }
  return out;
}

std::vector<Row> RunPoint(const GrowthOptions& o, const Point& p) {
  std::string prefix = absl::StrCat("growth/", p.Name());
  std::fprintf(stderr, "%s: %llu keys of %zu B, %d followers, %zu clients\n", prefix.c_str(),
               static_cast<unsigned long long>(p.keys), p.value_size, p.followers, p.clients);
  // W4 writes as many keys again while a follower is down: the archive keeps them all (the
  // largest point writes about 3.3 GB), unless the caller set retention itself.
  std::vector<std::string> replication = o.replication;
  bool retention_set = false;
  for (const std::string& l : replication) retention_set |= absl::StartsWith(l, "wal_retention");
  if (!retention_set) replication.push_back("wal_retention_bytes = 17179869184");
  LocalCluster cluster(o.walshipd, p.followers + 1, replication);
  cluster.StartAll();
  const std::string leader = cluster.addr("n1");
  std::vector<std::pair<std::string, std::string>> followers;
  for (size_t i = 1; i < cluster.ids().size(); ++i) {
    followers.push_back({cluster.ids()[i], cluster.addr(cluster.ids()[i])});
  }
  Sizes sizes{p.keys, p.keys, p.value_size, o.cap_s, p.clients};
  std::vector<W1Variant> shapes = {{64, 1, p.clients}};
  if (p.factor == "base" || p.factor == "clients") shapes.push_back({1, 1, p.clients});
  std::vector<Row> rows;
  for (const W1Variant& v : shapes) {
    WaitCaughtUp(leader, followers.size());
    W2Probe probe(leader, followers);
    // The shape without ",clients:N": the point's name says it.
    W1Variant named = v;
    named.clients = 1;
    Row row = RunW1(absl::StrCat(prefix, "/W1/", named.Name()), leader, sizes, v, &probe, nullptr);
    row.counters["mb_per_s"] =
        row.ops_per_s * static_cast<double>(Key(0).size() + p.value_size) / 1e6;
    rows.push_back(std::move(row));
  }
  WaitCaughtUp(leader, followers.size());
  Row w4 = RunW4(cluster, sizes);
  w4.name = absl::StrCat(prefix, "/W4");
  w4.counters["catchup_mb"] =
      static_cast<double>(p.keys) * static_cast<double>(Key(0).size() + p.value_size) / 1e6;
  rows.push_back(std::move(w4));
  return rows;
}

}  // namespace

std::vector<Row> RunGrowth(const GrowthOptions& o) {
  std::vector<Row> rows;
  for (const Point& p : Points(o.scale)) {
    for (Row& r : RunPoint(o, p)) rows.push_back(std::move(r));
  }
  return rows;
}

std::vector<std::string> WriteGrowthPlots(const std::string& dir_in,
                                          const std::vector<Aggregate>& aggs, double scale) {
  const std::string dir = PlotDir(dir_in);
  fs::create_directories(fs::path(dir) / "data");
  auto median = [&](const std::string& row, const std::string& metric) -> double {
    for (const Aggregate& a : aggs) {
      if (a.name != row) continue;
      if (metric == "ops_per_s") return Median(a.ops_per_s);
      auto c = a.counters.find(metric);
      return c == a.counters.end() ? -1 : Median(c->second);
    }
    return -1;
  };
  std::vector<Point> points = Points(scale);
  std::ostringstream gp;
  gp << "set terminal svg size 1200,400 dynamic background rgb 'white' noenhanced\n"
     << "set linetype 1 lc rgb '#1f77b4'\nset linetype 2 lc rgb '#ff7f0e'\n"
     << "set linetype 3 lc rgb '#2ca02c'\nset key top left\nset grid\n";
  std::vector<std::string> drawn;
  for (const char* factor : kFactors) {
    std::string data = absl::StrCat(dir, "/data/growth-", factor, ".dat");
    std::ofstream d(data);
    d << "# " << factor << " ops_per_s mb_per_s lag_p99_ms catchup_s\n";
    int n = 0;
    std::array<int, 4> valid = {0, 0, 0, 0};  // points with a value, per column after the first
    for (const Point& p : points) {
      if (p.factor != "base" && p.factor != factor) continue;
      std::string prefix = absl::StrCat("growth/", p.Name());
      std::array<double, 4> v = {
          median(prefix + "/W1/depth:64", "ops_per_s"), median(prefix + "/W1/depth:64", "mb_per_s"),
          median(prefix + "/W1/depth:64", "lag_p99_ms/worst"), median(prefix + "/W4", "catchup_s")};
      d << p.Value(factor);
      for (size_t c = 0; c < v.size(); ++c) {
        d << " " << v[c];
        valid[c] += v[c] > 0 ? 1 : 0;
      }
      d << "\n";
      ++n;
    }
    d.close();
    if (n < 2) continue;
    // A panel whose column holds no value (no lag sample, a catch-up that timed out) is drawn
    // empty, saying so: gnuplot would stop the whole script on it.
    auto panel = [&](int column, const std::string& style) {
      if (valid[column - 2] == 0) {
        return std::string(
            "set label 9 'not measured' at graph 0.5,0.5 center\nplot [1:10] [0:1] -1 "
            "notitle\nunset label 9\n");
      }
      return absl::StrCat("plot '", data, "' using 1:($", column, " > 0 ? $", column,
                          " : 1/0) smooth unique ", style, "\n");
    };
    // Sizes on log axes (W4's time too: linear growth is a slope of one); `smooth unique`
    // sorts by the factor, as the base point is not always the smallest.
    bool log_x = std::string(factor) == "keys" || std::string(factor) == "values";
    const Point& base = points.front();
    gp << "set output '" << dir << "/growth-" << factor << ".svg'\n"
       << "set multiplot layout 1,3 title 'walship: cost against " << factor
       << ", the rest at the base point (" << base.keys << " keys of " << base.value_size << " B, "
       << base.followers << " followers, " << base.clients << " client; W1 with 64 in flight)'\n"
       << (log_x ? "set logscale x\n" : "unset logscale x\n") << "set xlabel '" << factor << "'\n"
       << "set title 'W1 throughput'\nset ylabel 'writes/s'\nset y2label 'MB/s'\n"
       << "set ytics nomirror\nset y2tics\nset yrange [0:*]\nset y2range [0:*]\n";
    if (valid[0] == 0) {
      gp << panel(2, "");
    } else {
      gp << "plot '" << data << "' using 1:($2 > 0 ? $2 : 1/0) smooth unique with linespoints "
         << "lt 1 title 'writes/s', '' using 1:($3 > 0 ? $3 : 1/0) smooth unique axes x1y2 "
         << "with linespoints lt 2 title 'MB/s'\n";
    }
    gp << "unset y2label\nunset y2tics\nset ytics mirror\n"
       << "set title 'W2 during W1: worst follower lag p99'\nset ylabel 'ms'\n"
       << panel(4, "with linespoints lt 1 notitle")
       << "set title 'W4: catch-up of as many writes as keys'\nset ylabel 's'\n"
       << (log_x ? "set logscale y\nset yrange [*:*]\n" : "")
       << panel(5, "with linespoints lt 3 notitle") << "unset multiplot\nunset logscale\n";
    drawn.push_back(absl::StrCat("growth-", factor, ".svg"));
  }
  if (!RunGnuplot(dir, "growth.gp", gp.str())) return {};
  return drawn;
}

}  // namespace walship::bench
