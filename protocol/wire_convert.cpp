#include "fedpod/protocol/wire_convert.h"

namespace fedpod::protocol {

void to_wire(const data::Schema& schema, wire::Schema::Builder out) {
  auto cols = out.initColumns(schema.columns.size());
  for (size_t i = 0; i < schema.columns.size(); ++i) {
    const auto& c = schema.columns[i];
    cols[i].setName(c.name);
    cols[i].setType(c.type == data::ColumnType::kNumeric ? wire::ColumnType::NUMERIC
                                                         : wire::ColumnType::CATEGORICAL);
    auto cats = cols[i].initCategories(c.categories.size());
    for (size_t k = 0; k < c.categories.size(); ++k) cats.set(k, c.categories[k]);
    cols[i].setCategoriesWithheld(c.categories_withheld);
  }
  out.setNumRows(static_cast<uint64_t>(schema.num_rows));
}

data::Schema from_wire(wire::Schema::Reader in) {
  data::Schema s;
  for (auto c : in.getColumns()) {
    data::Column col;
    col.name = c.getName();
    col.type = c.getType() == wire::ColumnType::NUMERIC ? data::ColumnType::kNumeric
                                                        : data::ColumnType::kCategorical;
    for (auto cat : c.getCategories()) col.categories.emplace_back(cat);
    col.categories_withheld = c.getCategoriesWithheld();
    s.columns.push_back(std::move(col));
  }
  s.num_rows = static_cast<int64_t>(in.getNumRows());
  return s;
}

namespace {
template <typename List, typename Vec>
void set_list(List list, const Vec& v) {
  for (size_t i = 0; i < v.size(); ++i) list.set(i, v[i]);
}
}  // namespace

void to_wire(const data::Datastructure& ds, wire::Datastructure::Builder out) {
  out.setTarget(ds.target);
  set_list(out.initFeatures(ds.features.size()), ds.features);
  set_list(out.initIgnore(ds.ignore.size()), ds.ignore);
  set_list(out.initInputShape(ds.input_shape.size()), ds.input_shape);
  out.setNumClasses(static_cast<uint32_t>(ds.num_classes));
  out.setScale(ds.scale);
  auto split = out.initSplit();
  split.setValidation(ds.split.validation);
  split.setTest(ds.split.test);
  split.setSeed(ds.split.seed);
  auto cats = out.initCategories(ds.categories.size());
  size_t i = 0;
  for (const auto& [column, values] : ds.categories) {
    cats[i].setColumn(column);
    set_list(cats[i].initValues(values.size()), values);
    ++i;
  }
}

data::Datastructure from_wire(wire::Datastructure::Reader in) {
  data::Datastructure ds;
  ds.target = in.getTarget();
  for (auto f : in.getFeatures()) ds.features.emplace_back(f);
  for (auto f : in.getIgnore()) ds.ignore.emplace_back(f);
  for (auto d : in.getInputShape()) ds.input_shape.push_back(d);
  ds.num_classes = in.getNumClasses();
  ds.scale = in.getScale();
  ds.split.validation = in.getSplit().getValidation();
  ds.split.test = in.getSplit().getTest();
  ds.split.seed = in.getSplit().getSeed();
  for (auto c : in.getCategories()) {
    auto& values = ds.categories[c.getColumn()];
    values.clear();  // a column listed twice: the last list counts
    for (auto v : c.getValues()) values.emplace_back(v);
  }
  return ds;
}

std::vector<TensorSpec> tensor_specs(const std::vector<model::ParamInfo>& layout) {
  std::vector<TensorSpec> specs;
  specs.reserve(layout.size());
  for (const auto& p : layout) specs.push_back({p.name, p.shape});
  return specs;
}

std::vector<NamedTensor> parameter_views(const torch::Tensor& flat,
                                                   const std::vector<model::ParamInfo>& layout) {
  std::vector<NamedTensor> out;
  out.reserve(layout.size());
  for (const auto& p : layout) out.push_back({p.name, flat.narrow(0, p.offset, p.numel).view(p.shape)});
  return out;
}

}  // namespace fedpod::protocol
