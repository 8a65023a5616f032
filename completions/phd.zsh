
#compdef phd

_phd_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _PHD_COMPLETE=complete_zsh phd)
}

compdef _phd_completion phd

