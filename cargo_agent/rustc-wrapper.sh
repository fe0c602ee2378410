#!/bin/sh
# cargo-agent's RUSTC_WRAPPER (installed by cargo_agent/linkgate.py). cargo runs it for every
# rustc call, so it only looks at its arguments with shell builtins and execs:
# - a rustc call that links (a binary, a test, a build script, a cdylib/dylib, a proc macro)
#   gets `-C linker=<the link gate>`, and the lld/mold thread cap where that linker is in use;
#   the real linker, the one rustc would have run, is passed on in CARGO_AGENT_GATE_LINKER;
# - under RLIMIT_AS, `-Z threads=N` (rustc's parallel frontend, which fails under it) is
#   overridden with `-Zthreads=1`;
# - every call goes through the user's own wrapper, if any (CARGO_AGENT_GATE_CHAIN).
# Arguments added here are invisible to cargo: they change no fingerprint.
# CARGO_AGENT_GATE = <threads>:<host triple>:<lld by default 0/1>:<-Z threads off 0/1>
links= print= prev= linker= fuse= target= lldoff= zthreads=
for a do
    case $prev in
        --crate-type)
            case ,$a, in *,bin,* | *,cdylib,* | *,dylib,* | *,proc-macro,*) links=1 ;; esac ;;
        --target) target=$a ;;
        --print) case $a in link-args) ;; *) print=1 ;; esac ;;
        -C | --codegen) c=$a ;;
        -Z) case $a in threads=*) zthreads=1 ;; linker-features=-lld) lldoff=1 ;; esac ;;
    esac
    case $a in
        --test) links=1 ;;
        --crate-type=*)
            case ,${a#--crate-type=}, in *,bin,* | *,cdylib,* | *,dylib,* | *,proc-macro,*) links=1 ;; esac ;;
        --print=link-args) ;;
        --print=*) print=1 ;;
        --target=*) target=${a#--target=} ;;
        -C?*) c=${a#-C} ;;
        --codegen=*) c=${a#--codegen=} ;;
        -Zthreads=*) zthreads=1 ;;
        -Zlinker-features=-lld) lldoff=1 ;;
    esac
    if [ -n "$c" ]; then
        case $c in
            linker=*) linker=${c#linker=} ;;
            link-arg=-fuse-ld=* | link-args=*-fuse-ld=*) f=${c##*-fuse-ld=}; fuse=${f%% *} ;;
            link-self-contained=-linker | linker-features=-lld) lldoff=1 ;;
        esac
        c=
    fi
    prev=$a
done

g=$CARGO_AGENT_GATE
threads=${g%%:*}; g=${g#*:}
host=${g%%:*}; g=${g#*:}
lld=${g%%:*}; zoff=${g#*:}
zfix=
if [ -n "$zthreads" ] && [ "$zoff" = 1 ]; then zfix=-Zthreads=1; fi

if [ -z "$links" ] || [ -n "$print" ] || [ -z "$CARGO_AGENT_GATE" ] \
    || { [ -z "$linker" ] && [ -n "$target" ] && [ "$target" != "$host" ]; }; then
    # Nothing to link, or a cross target whose default linker the gate does not know.
    exec ${CARGO_AGENT_GATE_CHAIN:+"$CARGO_AGENT_GATE_CHAIN"} "$@" $zfix
fi

# Which linker rustc would run, and so which thread cap (if any) it takes.
native=
if [ -z "$target" ] || [ "$target" = "$host" ]; then native=1; fi
cap=
if [ -n "$fuse" ]; then
    case $fuse in
        lld | *ld.lld) cap=-Wl,--threads=$threads ;;
        mold | *ld.mold | *mold) cap=-Wl,--thread-count=$threads ;;
    esac
elif [ -n "$lldoff" ]; then
    :
else
    # rustc's own inference from the linker's name: a gcc/clang driver means no lld (unless
    # -fuse-ld says so); lld or mold called directly take the option without -Wl; any other
    # name (cc, a script) keeps the target's default, which is lld on some targets.
    stem=${linker##*/}
    case ${stem##*-} in *[!0-9]* | "") ;; *) stem=${stem%-*} ;; esac
    case $stem in
        rust-lld | ld.lld | *-ld.lld | lld | ld64.lld) cap=--threads=$threads ;;
        mold | ld.mold | *-ld.mold) cap=--thread-count=$threads ;;
        ld | *-ld | ld.* | *-ld.* | gold) ;;
        gcc | *-gcc | g++ | *-g++ | clang | *-clang | clang++ | *-clang++ | emcc) ;;
        gcc.* | *-gcc.* | clang.* | *-clang.* | g++.* | clang++.*) ;;
        *) if [ "$lld" = 1 ] && [ -n "$native" ]; then cap=-Wl,--threads=$threads; fi ;;
    esac
fi
if [ -z "$threads" ]; then cap=; fi

# The gate is reached under the real linker's own name, so rustc infers the same linker flavor.
name=${linker##*/}
dir=${0%/*}
gate=$dir/${name:-cc}
if [ ! -e "$gate" ]; then
    ln -s cargo-agent-link-gate "$gate" 2>/dev/null || [ -e "$gate" ] || gate=$dir/cargo-agent-link-gate
fi
export CARGO_AGENT_GATE_LINKER="${linker:-cc}"
exec ${CARGO_AGENT_GATE_CHAIN:+"$CARGO_AGENT_GATE_CHAIN"} "$@" $zfix -C "linker=$gate" ${cap:+-C} ${cap:+"link-arg=$cap"}
