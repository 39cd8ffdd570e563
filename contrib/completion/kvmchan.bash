# bash completion for kvmchan (docs/cli.md "Shell completion and manual pages").
# Install as /usr/share/bash-completion/completions/kvmchan.
_kvmchan() {
    local cur prev cmd i
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    cmd=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -r|--runtime-dir) ((i++)) ;;
            -*) ;;
            *) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done
    case $prev in
        -r|--runtime-dir)
            COMPREPLY=($(compgen -d -- "$cur")); return ;;
        -d|--domain|-t|--timeout|--read-min|--write-min|-s|--size|--ring|--pings|--guests)
            return ;;
    esac
    local opts
    case $cmd in
        '') opts='-r --runtime-dir -V --version -h --help listen connect proxy status demo help' ;;
        listen) opts='-d --domain --read-min --write-min -N --close-on-eof -t --timeout -v --verbose -h --help' ;;
        connect) opts='-d --domain -t --timeout -N --close-on-eof -v --verbose -h --help' ;;
        proxy)
            opts='--read-min --write-min -t --timeout -v --verbose -h --help'
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W 'tcp: unix: vchan:' -- "$cur"))
                compopt -o nospace 2>/dev/null
                return
            fi ;;
        status) opts='--json -h --help' ;;
        demo) opts='-s --size --ring --pings --guests --vm -h --help' ;;
        *) return ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _kvmchan kvmchan

_kvmchand() {
    local cur prev
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -r|--runtime-dir|--device-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        -c|--config) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -l|--log-level) COMPREPLY=($(compgen -W 'trace debug info warn error fatal silent' -- "$cur")); return ;;
        --simulate-guests) return ;;
    esac
    COMPREPLY=($(compgen -W '--host --guest --device-dir --vfio --simulate-guests -r --runtime-dir -c --config --config-optional --check-config -l --log-level -V --version -h --help' -- "$cur"))
}
complete -F _kvmchand kvmchand
