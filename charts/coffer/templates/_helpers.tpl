{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "coffer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the release's objects (the Deployment, the Service, the controller's RBAC objects).
With release name "coffer" (or any name containing "coffer") it is the release name, so the
Service is reachable as https://coffer.<namespace>.svc:8443.
*/}}
{{- define "coffer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "coffer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "coffer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the controller's pods.
*/}}
{{- define "coffer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coffer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The controller's ServiceAccount.
*/}}
{{- define "coffer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coffer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The controller image, its tag defaulting to the chart's appVersion.
*/}}
{{- define "coffer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Labels that select the CSI node plugin's pods: a name of their own, so that the controller's
Deployment and Service never select them.
*/}}
{{- define "coffer.csiNodeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "coffer.name" . }}-csi-node
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Where the serving certificate comes from: certManager, selfSigned or existing (tls.mode auto
resolved: certManager when the API server serves cert-manager.io/v1).
*/}}
{{- define "coffer.tlsMode" -}}
{{- $mode := .Values.tls.mode | default "auto" }}
{{- if eq $mode "auto" }}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" }}certManager{{ else }}selfSigned{{ end }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}

{{/*
The names the serving certificate holds, as a JSON list: the Service by every name a client in
the cluster may use.
*/}}
{{- define "coffer.dnsNames" -}}
{{- $fullname := include "coffer.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $fullname (printf "%s.%s" $fullname $ns) (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.cluster.local" $fullname $ns) | toJson }}
{{- end }}

{{/*
RFC 3339 (UTC) of a time, as the coffer.dev/not-after annotations hold it.
*/}}
{{- define "coffer.rfc3339" -}}
{{- dateInZone "2006-01-02T15:04:05Z07:00" . "UTC" }}
{{- end }}

{{/*
With tls.mode selfSigned: the CA and the serving certificate, as a JSON object of base64 PEM
(caCrt, caKey, crt, key; previousCaCrt, the CA before the last renewal, or ""; caBundle, the
CA and the previous one) and RFC 3339 expiries (caNotAfter, notAfter, previousCaNotAfter).

What the cluster holds is kept (found with `lookup`), so that an upgrade changes nothing, unless:
the CA expires within tls.selfSigned.caRenewBeforeDays (then both are made again, and the old CA
stays in caBundle beside the new one until it expires, so that clients holding the bundle trust
the serving certificate before and after kubelet swaps it); the serving
certificate expires within tls.selfSigned.renewBeforeDays, names other DNS names, or was signed
by another CA (then it is issued again by the kept CA). A Secret without the annotations, or
without a key, counts as missing. `helm template` and `--dry-run` see no cluster: they always
make new ones.

Computed once per render and kept under .Values, so that every template sees the same CA.
*/}}
{{- define "coffer.selfSignedTLS" -}}
{{- if not (hasKey .Values "__cofferSelfSignedTLS") }}
{{- $fullname := include "coffer.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $cfg := .Values.tls.selfSigned }}
{{- $dnsNames := include "coffer.dnsNames" . | fromJsonArray }}
{{- $now := now }}
{{- $out := dict }}
{{- /* The CA: kept while it is valid beyond caRenewBeforeDays. */}}
{{- $ca := dict }}
{{- $caSecret := lookup "v1" "Secret" $ns (printf "%s-ca" $fullname) | default dict }}
{{- $caCrt := dig "data" "tls.crt" "" $caSecret }}
{{- $caKey := dig "data" "tls.key" "" $caSecret }}
{{- $caNotAfter := dig "metadata" "annotations" "coffer.dev/not-after" "" $caSecret }}
{{- $caThreshold := $now | dateModify (printf "+%dh" (mul (int $cfg.caRenewBeforeDays) 24)) }}
{{- $keepCA := false }}
{{- if and $caCrt $caKey $caNotAfter }}
{{- if (toDate "2006-01-02T15:04:05Z07:00" $caNotAfter).After $caThreshold }}
{{- $keepCA = true }}
{{- end }}
{{- end }}
{{- $previous := "" }}
{{- $previousNotAfter := "" }}
{{- if $keepCA }}
{{- $ca = buildCustomCert $caCrt $caKey }}
{{- $_ := set $out "caCrt" $caCrt }}
{{- $_ := set $out "caKey" $caKey }}
{{- $_ := set $out "caNotAfter" $caNotAfter }}
{{- /* The CA before the last renewal, kept in the bundle while it is valid. */}}
{{- $previous = dig "data" "previous.crt" "" $caSecret }}
{{- $previousNotAfter = dig "metadata" "annotations" "coffer.dev/previous-not-after" "" $caSecret }}
{{- else }}
{{- if and $caCrt $caNotAfter }}
{{- $previous = $caCrt }}
{{- $previousNotAfter = $caNotAfter }}
{{- end }}
{{- $ca = genCA (printf "%s-ca" $fullname) (int $cfg.caValidityDays) }}
{{- $_ := set $out "caCrt" ($ca.Cert | b64enc) }}
{{- $_ := set $out "caKey" ($ca.Key | b64enc) }}
{{- $_ := set $out "caNotAfter" (include "coffer.rfc3339" ($now | dateModify (printf "+%dh" (mul (int $cfg.caValidityDays) 24)))) }}
{{- end }}
{{- if not (and $previous $previousNotAfter ((toDate "2006-01-02T15:04:05Z07:00" $previousNotAfter).After $now)) }}
{{- $previous = "" }}
{{- $previousNotAfter = "" }}
{{- end }}
{{- $_ := set $out "previousCaCrt" $previous }}
{{- $_ := set $out "previousCaNotAfter" $previousNotAfter }}
{{- $_ := set $out "caBundle" (printf "%s%s" (get $out "caCrt" | b64dec) ($previous | b64dec) | b64enc) }}
{{- /* The serving certificate: kept while valid beyond renewBeforeDays, for the same names, from the same CA. */}}
{{- $secret := lookup "v1" "Secret" $ns .Values.tls.secretName | default dict }}
{{- $crt := dig "data" "tls.crt" "" $secret }}
{{- $key := dig "data" "tls.key" "" $secret }}
{{- $issuer := dig "data" "ca.crt" "" $secret }}
{{- $notAfter := dig "metadata" "annotations" "coffer.dev/not-after" "" $secret }}
{{- $names := dig "metadata" "annotations" "coffer.dev/dns-names" "" $secret }}
{{- $threshold := $now | dateModify (printf "+%dh" (mul (int $cfg.renewBeforeDays) 24)) }}
{{- $keep := false }}
{{- if and $keepCA $crt $key $notAfter (eq $issuer (get $out "caCrt")) (eq $names (join "," $dnsNames)) }}
{{- if (toDate "2006-01-02T15:04:05Z07:00" $notAfter).After $threshold }}
{{- $keep = true }}
{{- end }}
{{- end }}
{{- if $keep }}
{{- $_ := set $out "crt" $crt }}
{{- $_ := set $out "key" $key }}
{{- $_ := set $out "notAfter" $notAfter }}
{{- else }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $fullname $ns) nil $dnsNames (int $cfg.validityDays) $ca }}
{{- $_ := set $out "crt" ($cert.Cert | b64enc) }}
{{- $_ := set $out "key" ($cert.Key | b64enc) }}
{{- $_ := set $out "notAfter" (include "coffer.rfc3339" ($now | dateModify (printf "+%dh" (mul (int $cfg.validityDays) 24)))) }}
{{- end }}
{{- $_ := set $out "dnsNames" (join "," $dnsNames) }}
{{- $_ := set .Values "__cofferSelfSignedTLS" $out }}
{{- end }}
{{- get .Values "__cofferSelfSignedTLS" | toJson }}
{{- end }}

{{/*
The CA that signed the serving certificate, base64 PEM, when the chart knows it (selfSigned, with
the previous CA while it is valid, or existing with tls.caBundle); empty otherwise.
*/}}
{{- define "coffer.caBundle" -}}
{{- $mode := include "coffer.tlsMode" . }}
{{- if eq $mode "selfSigned" }}
{{- get (include "coffer.selfSignedTLS" . | fromJson) "caBundle" }}
{{- else if eq $mode "existing" }}
{{- .Values.tls.caBundle }}
{{- end }}
{{- end }}

{{/*
Where the CSI plugin finds the CA of the controller's certificate, as a JSON object: kind
configMap or secret (and its name), or kind "" for the system's CAs.
*/}}
{{- define "coffer.apiCA" -}}
{{- $mode := include "coffer.tlsMode" . }}
{{- if .Values.csi.apiCAConfigMap }}
{{- dict "kind" "configMap" "name" .Values.csi.apiCAConfigMap | toJson }}
{{- else if include "coffer.caBundle" . }}
{{- dict "kind" "configMap" "name" (printf "%s-ca" (include "coffer.fullname" .)) | toJson }}
{{- else if eq $mode "certManager" }}
{{- dict "kind" "secret" "name" .Values.tls.secretName | toJson }}
{{- else }}
{{- dict "kind" "" "name" "" | toJson }}
{{- end }}
{{- end }}

{{/*
The volume holding the CA of the controller's certificate (key ca.crt), for the node plugins:
the chart's ConfigMap, or only ca.crt of the TLS Secret (cert-manager's), never its key.
Empty when the system's CAs are trusted.
*/}}
{{- define "coffer.apiCAVolume" -}}
{{- $apiCA := include "coffer.apiCA" . | fromJson }}
{{- if eq $apiCA.kind "configMap" }}
- name: api-ca
  configMap:
    name: {{ $apiCA.name }}
    items:
      - key: ca.crt
        path: ca.crt
{{- else if eq $apiCA.kind "secret" }}
- name: api-ca
  secret:
    secretName: {{ $apiCA.name }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}
