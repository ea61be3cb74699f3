# shellcheck shell=bash
# Source this file (bash or zsh) to enter the flowclas_ros dev environment made by scripts/bootstrap:
#
#   source scripts/env.sh
#
# Afterwards `import flowclas_ros` resolves to the source tree (edits take effect at once)
# and `from flowclas_ros.msg import AnomalyResult` to the colcon-built messages in install/.
# Sourcing twice is harmless.

if [ -n "${BASH_SOURCE[0]:-}" ]; then _flowclas_env="${BASH_SOURCE[0]}"; else _flowclas_env="${(%):-%x}"; fi
FLOWCLAS_ROOT="$(cd "$(dirname "$_flowclas_env")/.." && pwd)"
export FLOWCLAS_ROOT
unset _flowclas_env

if [ ! -x "$FLOWCLAS_ROOT/.venv/bin/python" ]; then
    echo "flowclas_ros: no .venv in $FLOWCLAS_ROOT; run 'make bootstrap' (or scripts/bootstrap) first" >&2
    return 1 2>/dev/null || exit 1
fi

# Prepend $2 to the colon-separated variable named $1 unless it is already there.
_flowclas_prepend() {
    case ":$(eval "printf '%s' \"\${$1:-}\""):" in
        *":$2:"*) ;;
        *) eval "export $1=\"$2\${$1:+:\$$1}\"" ;;
    esac
}

# shellcheck disable=SC1091
. "$FLOWCLAS_ROOT/.venv/bin/activate"

_flowclas_install="$FLOWCLAS_ROOT/install/flowclas_ros"
# The venv is itself an ament prefix (the ROS wheels install share/ament_index into it).
_flowclas_prepend AMENT_PREFIX_PATH "$VIRTUAL_ENV"
_flowclas_prepend CMAKE_PREFIX_PATH "$VIRTUAL_ENV"
_flowclas_prepend AMENT_PREFIX_PATH "$_flowclas_install"
# Generated message libraries; the ROS wheels add the venv's own lib dirs on start-up.
_flowclas_prepend LD_LIBRARY_PATH "$_flowclas_install/lib"
# Source tree first, then the generated flowclas_ros.msg; flowclas_ros/__init__.py
# joins both into one package (pkgutil.extend_path).
_flowclas_prepend PYTHONPATH "$_flowclas_install/lib/python3.11/site-packages"
_flowclas_prepend PYTHONPATH "$FLOWCLAS_ROOT"
# `colcon build` in this shell: see scripts/colcon-defaults.yaml.
export COLCON_DEFAULTS_FILE="${COLCON_DEFAULTS_FILE:-$FLOWCLAS_ROOT/scripts/colcon-defaults.yaml}"
# Keep DDS discovery on this machine unless the user chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"

if [ ! -d "$_flowclas_install" ]; then
    echo "flowclas_ros: messages not built yet ($FLOWCLAS_ROOT/install); run 'make bootstrap'" >&2
fi
unset _flowclas_install
unset -f _flowclas_prepend
