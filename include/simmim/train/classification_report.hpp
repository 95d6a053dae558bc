#pragma once
// Per-class precision, recall, F1 and support with macro and support-weighted averages and the accuracy: what
// a linear probe or a fine-tuned classifier got right class by class, not only overall. The definitions are
// those of scikit-learn's classification_report with zero_division=0: a ratio whose denominator is zero is 0
// (a class never predicted has precision 0; a class absent from the labels has recall 0 and support 0), and
// the macro average counts every class of the report, those with no support included.

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

struct ClassScores {
  std::string name;  // the class name, or its index as text
  double precision = 0.0, recall = 0.0, f1 = 0.0;
  int64_t support = 0;  // how many labels are this class
};

struct ClassificationReport {
  std::vector<ClassScores> classes;  // one per class 0 .. num_classes - 1
  double accuracy = 0.0;
  ClassScores macro_avg;     // unweighted mean over the classes
  ClassScores weighted_avg;  // mean weighted by support
  int64_t total = 0;         // number of labels

  // A table as scikit-learn prints it: one row per class, then accuracy, macro avg, weighted avg.
  std::string to_string(int digits = 4) const {
    size_t name_width = std::string("weighted avg").size();
    for (const auto& c : classes) name_width = std::max(name_width, c.name.size());
    const int w = std::max(digits + 2, 9);  // "precision" is 9 wide
    std::string out;
    char buf[512];
    auto row = [&](const std::string& name, const std::string& p, const std::string& r, const std::string& f,
                   int64_t support) {
      std::snprintf(buf, sizeof(buf), "%*s %*s %*s %*s %*lld\n", static_cast<int>(name_width), name.c_str(), w,
                    p.c_str(), w, r.c_str(), w, f.c_str(), w, static_cast<long long>(support));
      out += buf;
    };
    auto num = [&](double v) {
      std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
      return std::string(buf);
    };
    std::snprintf(buf, sizeof(buf), "%*s %*s %*s %*s %*s\n\n", static_cast<int>(name_width), "", w, "precision", w,
                  "recall", w, "f1-score", w, "support");
    out += buf;
    for (const auto& c : classes) row(c.name, num(c.precision), num(c.recall), num(c.f1), c.support);
    out += "\n";
    row("accuracy", "", "", num(accuracy), total);
    for (const ClassScores* a : {&macro_avg, &weighted_avg})
      row(a->name, num(a->precision), num(a->recall), num(a->f1), a->support);
    return out;
  }

  // {"accuracy", "macro_avg": {...}, "weighted_avg": {...}, "classes": [{"name", "precision", "recall", "f1",
  // "support"}, ...]}.
  nlohmann::json to_json() const {
    auto one = [](const ClassScores& c) {
      return nlohmann::json{{"name", c.name}, {"precision", c.precision}, {"recall", c.recall}, {"f1", c.f1},
                            {"support", c.support}};
    };
    nlohmann::json per_class = nlohmann::json::array();
    for (const auto& c : classes) per_class.push_back(one(c));
    return {{"accuracy", accuracy}, {"macro_avg", one(macro_avg)}, {"weighted_avg", one(weighted_avg)},
            {"classes", per_class}};
  }
};

// The report for integer labels and predictions (any shape, the same number of elements, values in
// [0, num_classes)). `num_classes` <= 0: one more than the largest value in either. `names`: empty (the
// indices) or one per class.
inline ClassificationReport classification_report(const at::Tensor& labels, const at::Tensor& predictions,
                                                  int64_t num_classes = 0,
                                                  const std::vector<std::string>& names = {}) {
  constexpr const char* api = "simmim::classification_report";
  SIMMIM_CHECK(labels.defined() && at::isIntegralType(labels.scalar_type(), /*includeBool=*/false), api, "labels",
               "an integer tensor", describe(labels));
  SIMMIM_CHECK(predictions.defined() && at::isIntegralType(predictions.scalar_type(), /*includeBool=*/false), api,
               "predictions", "an integer tensor", describe(predictions));
  SIMMIM_CHECK(labels.numel() == predictions.numel(), api, "predictions",
               "as many elements as labels (" + std::to_string(labels.numel()) + ")", describe(predictions));
  const at::Tensor y = labels.reshape(-1).to(at::kCPU, at::kLong), p = predictions.reshape(-1).to(at::kCPU, at::kLong);
  const int64_t lo = y.numel() > 0 ? std::min(y.min().item<int64_t>(), p.min().item<int64_t>()) : 0;
  const int64_t hi = y.numel() > 0 ? std::max(y.max().item<int64_t>(), p.max().item<int64_t>()) : -1;
  SIMMIM_CHECK(lo >= 0, api, "labels / predictions", "class indices >= 0", "the value " + std::to_string(lo));
  const int64_t K = num_classes > 0 ? num_classes : hi + 1;
  SIMMIM_CHECK(hi < K, api, "labels / predictions",
               "class indices below num_classes = " + std::to_string(K), "the value " + std::to_string(hi));
  SIMMIM_CHECK_VALUE(names.empty() || static_cast<int64_t>(names.size()) == K, api, "names",
                     "empty or one per class (" + std::to_string(K) + ")", names.size(), " names");

  // Confusion counts: tp per class, how often each class is predicted, how often it is the label.
  const at::Tensor hits = y.eq(p);
  const at::Tensor tp_t = at::bincount(y.masked_select(hits), {}, K);
  const at::Tensor pred_t = at::bincount(p, {}, K), true_t = at::bincount(y, {}, K);
  const auto tp = tp_t.accessor<int64_t, 1>(), npred = pred_t.accessor<int64_t, 1>(), ntrue = true_t.accessor<int64_t, 1>();
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };

  ClassificationReport r;
  r.total = y.numel();
  int64_t correct = 0;
  r.macro_avg.name = "macro avg";
  r.weighted_avg.name = "weighted avg";
  for (int64_t k = 0; k < std::max<int64_t>(K, 0); ++k) {
    ClassScores c;
    c.name = names.empty() ? std::to_string(k) : names[static_cast<size_t>(k)];
    c.precision = ratio(static_cast<double>(tp[k]), static_cast<double>(npred[k]));
    c.recall = ratio(static_cast<double>(tp[k]), static_cast<double>(ntrue[k]));
    // 2 tp / (2 tp + fp + fn), the harmonic mean of precision and recall wherever both are defined.
    c.f1 = ratio(2.0 * static_cast<double>(tp[k]), static_cast<double>(npred[k] + ntrue[k]));
    c.support = ntrue[k];
    correct += tp[k];
    for (auto* a : {&r.macro_avg, &r.weighted_avg}) {
      const double wgt = a == &r.macro_avg ? 1.0 : static_cast<double>(c.support);
      a->precision += wgt * c.precision;
      a->recall += wgt * c.recall;
      a->f1 += wgt * c.f1;
    }
    r.classes.push_back(c);
  }
  for (auto* a : {&r.macro_avg, &r.weighted_avg}) {
    const double norm = a == &r.macro_avg ? static_cast<double>(r.classes.size()) : static_cast<double>(r.total);
    a->precision = ratio(a->precision, norm);
    a->recall = ratio(a->recall, norm);
    a->f1 = ratio(a->f1, norm);
    a->support = r.total;
  }
  r.accuracy = ratio(static_cast<double>(correct), static_cast<double>(r.total));
  return r;
}

SIMMIM_NAMESPACE_END
