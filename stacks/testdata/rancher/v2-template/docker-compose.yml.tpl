version: '2'
services:
  web:
    image: "nginx:{{ .Values.tag | default "latest" }}"
    labels:
      io.rancher.scheduler.affinity:container_label_soft_ne: io.rancher.stack_service.name=$${stack_name}/$${service_name}
{{- if eq .Values.sysctl "true" }}
      io.rancher.sidekicks: web-sysctl
{{- end }}
    environment:
      STACK: "{{ .Stack.Name }}"
      PEERS: "{{- range $i, $e := until (atoi .Values.peers) }}{{ if $i }},{{ end }}peer-{{ $i }}{{- end }}"
      NAME_UPPER: "{{ upper .Values.name }}"
    command:
{{- range splitPreserveQuotes .Values.args }}
      - {{ . | quote }}
{{- end }}
{{- if eq .Values.sysctl "true" }}
  web-sysctl:
    image: busybox
    privileged: true
    network_mode: none
    labels:
      io.rancher.container.start_once: "true"
{{- end }}
