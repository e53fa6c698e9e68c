#!/usr/bin/env bash
# Scaffolds a plugin from host/templates/plugin the way `techne plugin new
# NAME --world ROLE` does (placeholders substituted, the SDK vendored with
# its WIT as a real file) in a temporary directory outside the repository,
# then builds it for wasm32-wasip2 and runs its native unit tests.
#
# usage: plugins/check-template.sh [ROLE...]   (default: every role)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
templates=$repo/host/templates/plugin
sdk=$repo/plugins/sdk
roles=("$@")
[ ${#roles[@]} -gt 0 ] || roles=(rewriter prompt-policy solver evolution-strategy migration-strategy)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR=$work/target

for role in "${roles[@]}"; do
    name=my-$role
    crate=${name//-/_}
    dir=$work/$name
    mkdir -p "$dir/src" "$dir/sdk/src" "$dir/sdk/wit"
    sub() { sed -e "s/{{name}}/$name/g" -e "s/{{crate_name}}/$crate/g" -e "s/{{role}}/$role/g" "$1" > "$2"; }
    sub "$templates/Cargo.toml.tmpl" "$dir/Cargo.toml"
    sub "$templates/README.md.tmpl" "$dir/README.md"
    sub "$templates/.gitignore.tmpl" "$dir/.gitignore"
    sub "$templates/src/lib.rs.$role.tmpl" "$dir/src/lib.rs"
    # The SDK files `techne plugin new` vendors.
    cp "$sdk/Cargo.toml" "$sdk/build.rs" "$dir/sdk/"
    cp "$sdk"/src/*.rs "$dir/sdk/src/"
    cp "$repo/wit/techne-plugin.wit" "$dir/sdk/wit/techne-plugin.wit"
    if grep -rn '{{' "$dir/src" "$dir/Cargo.toml" "$dir/README.md"; then
        echo "unsubstituted placeholder in $name" >&2
        exit 1
    fi
    echo "== $role"
    (cd "$dir" && cargo build --quiet --release --target wasm32-wasip2)
    test -f "$CARGO_TARGET_DIR/wasm32-wasip2/release/$crate.wasm"
    (cd "$dir" && cargo test --quiet --target x86_64-unknown-linux-gnu)
done
echo "templates OK: ${roles[*]}"
