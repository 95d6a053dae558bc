#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include "simmim/train/classification_report.hpp"

using Catch::Approx;
using Catch::Matchers::ContainsSubstring;

namespace {

void require_scores(const simmim::ClassScores& c, double p, double r, double f1, int64_t support) {
  INFO(c.name);
  REQUIRE(c.precision == Approx(p).margin(1e-12));
  REQUIRE(c.recall == Approx(r).margin(1e-12));
  REQUIRE(c.f1 == Approx(f1).margin(1e-12));
  REQUIRE(c.support == support);
}

}  // namespace

// Ten labels, five classes: class 3 is never predicted, class 4 is never the label (predicted once).
// Hand-computed, with scikit-learn's definitions and zero_division=0:
//   class  tp  predicted  true   precision  recall  f1 = 2 tp / (predicted + true)
//   0      2   2          3      1          2/3     4/5
//   1      1   3          2      1/3        1/2     2/5
//   2      3   4          4      3/4        3/4     3/4
//   3      0   0          1      0 (0/0)    0       0
//   4      0   1          0      0          0 (0/0) 0
TEST_CASE("classification_report: per class, macro and weighted averages, zero_division 0", "[train][report]") {
  const auto y = torch::tensor({0, 0, 0, 1, 1, 2, 2, 2, 2, 3}, torch::kLong);
  const auto p = torch::tensor({0, 0, 1, 1, 4, 2, 2, 1, 2, 2}, torch::kLong);
  const simmim::ClassificationReport r = simmim::classification_report(y, p, 5);
  REQUIRE(r.classes.size() == 5);
  require_scores(r.classes[0], 1.0, 2.0 / 3, 0.8, 3);
  require_scores(r.classes[1], 1.0 / 3, 0.5, 0.4, 2);
  require_scores(r.classes[2], 0.75, 0.75, 0.75, 4);
  require_scores(r.classes[3], 0.0, 0.0, 0.0, 1);  // never predicted: precision 0, not NaN
  require_scores(r.classes[4], 0.0, 0.0, 0.0, 0);  // absent from the labels: recall 0, support 0
  REQUIRE(r.accuracy == Approx(0.6));
  REQUIRE(r.total == 10);
  // The macro average counts all five classes, the one without support included.
  require_scores(r.macro_avg, (1.0 + 1.0 / 3 + 0.75) / 5, (2.0 / 3 + 0.5 + 0.75) / 5, (0.8 + 0.4 + 0.75) / 5, 10);
  // Weighted by support (3, 2, 4, 1, 0); the weighted recall is the accuracy.
  require_scores(r.weighted_avg, (3 * 1.0 + 2 / 3.0 + 4 * 0.75) / 10, 0.6, (3 * 0.8 + 2 * 0.4 + 4 * 0.75) / 10, 10);
  REQUIRE(r.classes[2].name == "2");
  REQUIRE(r.macro_avg.name == "macro avg");

  // Without num_classes: one more than the largest label or prediction, so the same five classes.
  REQUIRE(simmim::classification_report(y, p).classes.size() == 5);
  // Any integer dtype and shape; names per class.
  const auto named = simmim::classification_report(y.to(torch::kInt).view({2, 5}), p.to(torch::kByte).view({5, 2}), 5,
                                                   {"a", "b", "c", "d", "e"});
  require_scores(named.classes[1], 1.0 / 3, 0.5, 0.4, 2);
  REQUIRE(named.classes[4].name == "e");
}

TEST_CASE("classification_report: text table and JSON", "[train][report]") {
  const auto y = torch::tensor({0, 0, 0, 1, 1, 2, 2, 2, 2, 3}, torch::kLong);
  const auto p = torch::tensor({0, 0, 1, 1, 4, 2, 2, 1, 2, 2}, torch::kLong);
  const auto r = simmim::classification_report(y, p, 5, {"T-shirt/top", "b", "c", "d", "e"});
  const std::string text = r.to_string();
  REQUIRE_THAT(text, ContainsSubstring("precision"));
  REQUIRE_THAT(text, ContainsSubstring(" T-shirt/top    1.0000    0.6667    0.8000         3\n"));
  REQUIRE_THAT(text, ContainsSubstring("           e    0.0000    0.0000    0.0000         0\n"));
  REQUIRE_THAT(text, ContainsSubstring("    accuracy                        0.6000        10\n"));
  REQUIRE_THAT(text, ContainsSubstring("   macro avg    0.4167    0.3833    0.3900        10\n"));
  REQUIRE_THAT(text, ContainsSubstring("weighted avg    0.6667    0.6000    0.6200        10\n"));
  REQUIRE_THAT(r.to_string(2), ContainsSubstring("weighted avg      0.67      0.60      0.62        10\n"));

  const nlohmann::json j = r.to_json();
  REQUIRE(j["accuracy"].get<double>() == Approx(0.6));
  REQUIRE(j["classes"].size() == 5);
  REQUIRE(j["classes"][0]["name"] == "T-shirt/top");
  REQUIRE(j["classes"][1]["f1"].get<double>() == Approx(0.4));
  REQUIRE(j["weighted_avg"]["support"] == 10);
}

TEST_CASE("classification_report: bad input is a clear error", "[train][report]") {
  const auto y = torch::tensor({0, 1, 2}, torch::kLong);
  REQUIRE_THROWS_WITH(simmim::classification_report(y, torch::tensor({0, 1}, torch::kLong)),
                      ContainsSubstring("simmim::classification_report: predictions must be as many elements as "
                                        "labels (3)"));
  REQUIRE_THROWS_WITH(simmim::classification_report(y, torch::tensor({0.0, 1.0, 2.0})),
                      ContainsSubstring("predictions must be an integer tensor"));
  REQUIRE_THROWS_WITH(simmim::classification_report(y, torch::tensor({0, -1, 2}, torch::kLong)),
                      ContainsSubstring("class indices >= 0; got the value -1"));
  REQUIRE_THROWS_WITH(simmim::classification_report(y, y, 2),
                      ContainsSubstring("class indices below num_classes = 2; got the value 2"));
  REQUIRE_THROWS_WITH(simmim::classification_report(y, y, 3, {"a"}), ContainsSubstring("names must be empty or one per class (3)"));
  // No labels at all: an empty report, not a division by zero.
  const auto empty = simmim::classification_report(torch::zeros({0}, torch::kLong), torch::zeros({0}, torch::kLong), 2);
  REQUIRE(empty.classes.size() == 2);
  REQUIRE(empty.accuracy == 0.0);
  REQUIRE(empty.total == 0);
}
