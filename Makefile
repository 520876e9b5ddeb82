# Two entry points for a fresh machine: `make demo` and `make test`. Each creates .venv and
# installs what it needs by itself. torch is pinned to the CPU wheel that lies on this machine's
# disk *before* the package is installed, so its `torch>=2.4,<3` range is already satisfied and
# pip never pulls the multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
STUBS  := .stubs/.installed

.PHONY: demo test typecheck layers unit tables clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[cpu,test]'
	touch $@

# TensorRT cannot be installed here; its type stubs let mypy check the backend's API use.
# They go to .stubs (mypy_path), not into the venv, where a stub-only `tensorrt` package
# would make `import tensorrt` succeed with nothing inside. The generated stubs contain a few
# lines that are not valid Python (a parameter named `in`, a required parameter after defaults);
# the sed below renames / defaults exactly those so mypy can parse the file.
$(STUBS): $(STAMP)
	rm -rf .stubs
	$(BIN)/pip install -q --no-deps --target .stubs tensorrt-stubs==10.13.0.35.1
	sed -i -e 's/\bin: list\[/in_: list[/g' \
	       -e 's/power: Weights = None, channel_axis: int)/power: Weights = None, channel_axis: int = ...)/' \
	       .stubs/tensorrt_bindings/tensorrt.pyi
	touch $@

demo: $(STAMP)
	$(BIN)/nas2deploy demo

typecheck: $(STUBS)
	$(BIN)/mypy nas2deploy benchmarks

# The import layering of pyproject.toml ([tool.importlinter]): no module imports a layer above it.
layers: $(STAMP)
	$(BIN)/lint-imports --no-cache

unit: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test: typecheck layers unit

# Rebuild the shipped ONNX Runtime CPU tables and their validation reports (several minutes).
tables: $(STAMP)
	$(BIN)/nas2deploy profile --space densenas --backend onnxruntime --input-size 224 --out latency_tables/densenas224_ort_cpu_fp32_b1.json
	$(BIN)/nas2deploy lut validate latency_tables/densenas224_ort_cpu_fp32_b1.json --samples 100
	$(BIN)/nas2deploy profile --space densenas --backend onnxruntime --input-size 32 --out latency_tables/densenas32_ort_cpu_fp32_b1.json
	$(BIN)/nas2deploy lut validate latency_tables/densenas32_ort_cpu_fp32_b1.json --samples 100
	$(BIN)/nas2deploy profile --input-size 32 --width-mult 0.5 --num-classes 10 --max-stack-layers 1 --precision int8 \
		--out latency_tables/densenas32_small_c10_ort_cpu_int8_b1.json
	$(BIN)/nas2deploy lut validate latency_tables/densenas32_small_c10_ort_cpu_int8_b1.json --samples 100
	$(BIN)/nas2deploy profile --space dpc --input-size 128 --input-width 128 --num-classes 6 \
		--out latency_tables/dpc128_c6_ort_cpu_fp32_b1.json
	$(BIN)/nas2deploy lut validate latency_tables/dpc128_c6_ort_cpu_fp32_b1.json --samples 100

clean:
	rm -rf $(VENV) .stubs .mypy_cache .pytest_cache
