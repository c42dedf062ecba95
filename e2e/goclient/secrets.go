package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
)

const (
	stageCurrent  = "AWSCURRENT"
	stagePrevious = "AWSPREVIOUS"
	stagePending  = "AWSPENDING"
)

// newSecretsClient builds a Secrets Manager client for the server at endpoint, configured as
// newClient configures the KMS one.
func newSecretsClient(ctx context.Context, endpoint, region, keyID, secret string) (*secretsmanager.Client, error) {
	cfg, err := loadConfig(ctx, region, keyID, secret)
	if err != nil {
		return nil, err
	}
	return secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	}), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// newToken makes a ClientRequestToken in the UUID form the SDKs generate (36 characters, within
// the 32 to 64 Secrets Manager allows).
func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func sorted(values []string) []string {
	out := slices.Clone(values)
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}

func sameStages(got []string, want ...string) bool {
	return slices.Equal(sorted(got), sorted(want))
}

// stagesMap is VersionIdsToStages with each list sorted, for comparing and printing.
func stagesMap(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for id, stages := range m {
		out[id] = sorted(stages)
	}
	return out
}

func sameStagesMap(got, want map[string][]string) bool {
	return maps.EqualFunc(stagesMap(got), stagesMap(want), slices.Equal[[]string])
}

func tagMap(tags []smtypes.Tag) map[string]string {
	out := make(map[string]string, len(tags))
	for _, t := range tags {
		out[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

// valueDetail and checkValue describe and judge a GetSecretValue answer.
func valueDetail(out *secretsmanager.GetSecretValueOutput) map[string]any {
	d := map[string]any{"name": aws.ToString(out.Name), "arn": aws.ToString(out.ARN),
		"versionId": aws.ToString(out.VersionId), "versionStages": sorted(out.VersionStages)}
	if out.SecretString != nil {
		d["secretString"] = *out.SecretString
	}
	if out.SecretBinary != nil {
		d["secretBinaryBytes"] = len(out.SecretBinary)
	}
	return d
}

func checkValue(out *secretsmanager.GetSecretValueOutput, name, arn, value, versionID string, stages ...string) string {
	switch {
	case aws.ToString(out.Name) != name || aws.ToString(out.ARN) != arn:
		return fmt.Sprintf("another secret answered: %s (%s)", aws.ToString(out.Name), aws.ToString(out.ARN))
	case out.SecretString == nil:
		return "no SecretString"
	case *out.SecretString != value:
		return fmt.Sprintf("SecretString %q, want %q", *out.SecretString, value)
	case out.SecretBinary != nil:
		return "SecretBinary as well as SecretString"
	case aws.ToString(out.VersionId) != versionID:
		return fmt.Sprintf("VersionId %q, want %q", aws.ToString(out.VersionId), versionID)
	case !sameStages(out.VersionStages, stages...):
		return fmt.Sprintf("VersionStages %v, want %v", out.VersionStages, stages)
	case out.CreatedDate == nil:
		return "no CreatedDate"
	}
	return ""
}

// secrets drives Secrets Manager through one secret's life: values, versions and staging labels,
// listing, tags, deletion and restoring, with a binary secret and a batch read beside it. Every
// name is under a prefix made for this run, so runs against the same server do not meet.
func secrets(ctx context.Context, r *runner, c *secretsmanager.Client, region string) {
	prefix := "e2e/go-sdk-" + randomHex(6) + "/"
	name := prefix + "main"
	values := []string{`{"user":"go","password":"one"}`, "zwei – ünïcødé ✓", "three"}
	tokens := []string{newToken(), newToken(), newToken()}

	created, err := c.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name:               aws.String(name),
		SecretString:       aws.String(values[0]),
		Description:        aws.String("e2e: aws-sdk-go-v2"),
		ClientRequestToken: aws.String(tokens[0]),
		Tags:               []smtypes.Tag{{Key: aws.String("client"), Value: aws.String("aws-sdk-go-v2")}},
	})
	var arn string
	var detail map[string]any
	if err == nil {
		arn = aws.ToString(created.ARN)
		detail = map[string]any{"prefix": prefix, "name": aws.ToString(created.Name), "arn": arn,
			"versionId": aws.ToString(created.VersionId), "token": tokens[0]}
	}
	if !r.succeeded("CreateSecret", err, detail, func() string {
		want := "arn:aws:secretsmanager:" + region + ":"
		cut := strings.LastIndex(arn, "-")
		switch {
		case aws.ToString(created.Name) != name:
			return "another name answered"
		case !strings.HasPrefix(arn, want) || !strings.Contains(arn, ":secret:"+name+"-"):
			return "ARN is not " + want + "ACCOUNT:secret:" + name + "-XXXXXX"
		case len(arn)-cut-1 != 6:
			return "ARN suffix is not six characters"
		case aws.ToString(created.VersionId) != tokens[0]:
			return "VersionId is not the ClientRequestToken"
		}
		return ""
	}) {
		return // everything after needs the secret
	}
	partialArn := arn[:strings.LastIndex(arn, "-")]

	// The three ways to name a secret all reach it.
	for _, by := range []struct{ step, id string }{
		{"GetSecretValueByName", name}, {"GetSecretValueByArn", arn}, {"GetSecretValueByPartialArn", partialArn},
	} {
		got, err := c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(by.id)})
		detail = nil
		if err == nil {
			detail = valueDetail(got)
			detail["secretId"] = by.id
		}
		r.succeeded(by.step, err, detail, func() string {
			return checkValue(got, name, arn, values[0], tokens[0], stageCurrent)
		})
	}

	put, err := c.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(arn), SecretString: aws.String(values[1]), ClientRequestToken: aws.String(tokens[1]),
	})
	detail = nil
	if err == nil {
		detail = map[string]any{"arn": aws.ToString(put.ARN), "name": aws.ToString(put.Name),
			"versionId": aws.ToString(put.VersionId), "versionStages": sorted(put.VersionStages)}
	}
	r.succeeded("PutSecretValue", err, detail, func() string {
		switch {
		case aws.ToString(put.ARN) != arn || aws.ToString(put.Name) != name:
			return "another secret answered"
		case aws.ToString(put.VersionId) != tokens[1]:
			return "VersionId is not the ClientRequestToken"
		case !sameStages(put.VersionStages, stageCurrent):
			return fmt.Sprintf("VersionStages %v, want [AWSCURRENT]", put.VersionStages)
		}
		return ""
	})

	for _, get := range []struct {
		step, stage, value, version string
	}{
		{"GetSecretValueCurrent", "", values[1], tokens[1]},
		{"GetSecretValuePrevious", stagePrevious, values[0], tokens[0]},
	} {
		in := &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)}
		want := stageCurrent
		if get.stage != "" {
			in.VersionStage = aws.String(get.stage)
			want = get.stage
		}
		got, err := c.GetSecretValue(ctx, in)
		detail = nil
		if err == nil {
			detail = valueDetail(got)
		}
		r.succeeded(get.step, err, detail, func() string {
			return checkValue(got, name, arn, get.value, get.version, want)
		})
	}

	// A retry of the same request (same token, same value) answers as the first did and makes
	// no version.
	retried, err := c.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(name), SecretString: aws.String(values[1]), ClientRequestToken: aws.String(tokens[1]),
	})
	var versionsAfterRetry map[string][]string
	var describeErr error
	detail = nil
	if err == nil {
		var described *secretsmanager.DescribeSecretOutput
		described, describeErr = c.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
		if describeErr == nil {
			versionsAfterRetry = stagesMap(described.VersionIdsToStages)
		}
		detail = map[string]any{"versionId": aws.ToString(retried.VersionId),
			"versionStages": sorted(retried.VersionStages), "versions": len(versionsAfterRetry)}
	}
	r.succeeded("PutSecretValueRetried", err, detail, func() string {
		switch {
		case aws.ToString(retried.VersionId) != tokens[1]:
			return "the retry answered another VersionId"
		case describeErr != nil:
			return "DescribeSecret after the retry failed: " + describeErr.Error()
		case !sameStagesMap(versionsAfterRetry, map[string][]string{
			tokens[0]: {stagePrevious}, tokens[1]: {stageCurrent}}):
			return fmt.Sprintf("versions after the retry: %v", versionsAfterRetry)
		}
		return ""
	})

	_, err = c.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(name), SecretString: aws.String("not " + values[1]), ClientRequestToken: aws.String(tokens[1]),
	})
	r.failedWith("PutSecretValueTokenReused", "ResourceExistsException", err, isType[*smtypes.ResourceExistsException])

	// A value staged AWSPENDING, as a rotation would make it, leaves AWSCURRENT where it was.
	pending, err := c.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(name), SecretString: aws.String(values[2]), ClientRequestToken: aws.String(tokens[2]),
		VersionStages: []string{stagePending},
	})
	var current *secretsmanager.GetSecretValueOutput
	var currentErr error
	detail = nil
	if err == nil {
		current, currentErr = c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
		detail = map[string]any{"versionId": aws.ToString(pending.VersionId), "versionStages": sorted(pending.VersionStages)}
		if currentErr == nil {
			detail["currentVersionId"] = aws.ToString(current.VersionId)
		}
	}
	r.succeeded("PutSecretValuePending", err, detail, func() string {
		switch {
		case aws.ToString(pending.VersionId) != tokens[2]:
			return "VersionId is not the ClientRequestToken"
		case !sameStages(pending.VersionStages, stagePending):
			return fmt.Sprintf("VersionStages %v, want [AWSPENDING]", pending.VersionStages)
		case currentErr != nil:
			return "GetSecretValue after it failed: " + currentErr.Error()
		}
		return checkValue(current, name, arn, values[1], tokens[1], stageCurrent)
	})

	// AWSCURRENT is on a version, so moving it must say which one it leaves.
	_, err = c.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: aws.String(name), VersionStage: aws.String(stageCurrent), MoveToVersionId: aws.String(tokens[2]),
	})
	r.failedWith("UpdateSecretVersionStageWithoutRemove", "InvalidParameterException", err,
		isType[*smtypes.InvalidParameterException])

	moved, err := c.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: aws.String(name), VersionStage: aws.String(stageCurrent),
		MoveToVersionId: aws.String(tokens[2]), RemoveFromVersionId: aws.String(tokens[1]),
	})
	detail = nil
	if err == nil {
		current, currentErr = c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
		detail = map[string]any{"arn": aws.ToString(moved.ARN), "name": aws.ToString(moved.Name)}
		if currentErr == nil {
			detail["currentVersionId"] = aws.ToString(current.VersionId)
		}
	}
	r.succeeded("UpdateSecretVersionStage", err, detail, func() string {
		switch {
		case aws.ToString(moved.ARN) != arn || aws.ToString(moved.Name) != name:
			return "another secret answered"
		case currentErr != nil:
			return "GetSecretValue after it failed: " + currentErr.Error()
		}
		return checkValue(current, name, arn, values[2], tokens[2], stageCurrent, stagePending)
	})

	// The first version lost AWSPREVIOUS to the second, so it has no label and is not shown.
	wantStages := map[string][]string{tokens[1]: {stagePrevious}, tokens[2]: {stageCurrent, stagePending}}
	described, err := c.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(partialArn)})
	detail = nil
	if err == nil {
		detail = map[string]any{"arn": aws.ToString(described.ARN), "name": aws.ToString(described.Name),
			"description":        aws.ToString(described.Description),
			"versionIdsToStages": stagesMap(described.VersionIdsToStages), "tags": tagMap(described.Tags)}
	}
	r.succeeded("DescribeSecret", err, detail, func() string {
		switch {
		case aws.ToString(described.ARN) != arn || aws.ToString(described.Name) != name:
			return "another secret described"
		case aws.ToString(described.Description) != "e2e: aws-sdk-go-v2":
			return "description differs"
		case !sameStagesMap(described.VersionIdsToStages, wantStages):
			return fmt.Sprintf("VersionIdsToStages %v, want %v", described.VersionIdsToStages, wantStages)
		case !maps.Equal(tagMap(described.Tags), map[string]string{"client": "aws-sdk-go-v2"}):
			return "tags differ"
		case described.CreatedDate == nil || described.LastChangedDate == nil:
			return "no CreatedDate or LastChangedDate"
		case described.DeletedDate != nil:
			return "DeletedDate on a live secret"
		}
		return ""
	})

	// Binary values go over the wire as base64; random bytes catch any mangling of that.
	binaryName := prefix + "binary"
	blob := make([]byte, 1024)
	_, _ = rand.Read(blob)
	blob[0], blob[1] = 0x00, 0xff
	createdBinary, err := c.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String(binaryName), SecretBinary: blob,
	})
	var binaryArn string
	detail = nil
	if err == nil {
		binaryArn = aws.ToString(createdBinary.ARN)
		detail = map[string]any{"name": aws.ToString(createdBinary.Name), "arn": binaryArn,
			"versionId": aws.ToString(createdBinary.VersionId), "sha256": sha256Hex(blob)}
	}
	r.succeeded("CreateSecretBinary", err, detail, func() string {
		if aws.ToString(createdBinary.Name) != binaryName || !strings.Contains(binaryArn, ":secret:"+binaryName+"-") {
			return "another name or ARN answered"
		}
		if aws.ToString(createdBinary.VersionId) == "" {
			return "no VersionId (the SDK sends its own ClientRequestToken)"
		}
		return ""
	})

	gotBinary, err := c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(binaryArn)})
	detail = nil
	if err == nil {
		detail = valueDetail(gotBinary)
		detail["roundTrip"] = bytes.Equal(gotBinary.SecretBinary, blob)
	}
	r.succeeded("GetSecretValueBinary", err, detail, func() string {
		switch {
		case !bytes.Equal(gotBinary.SecretBinary, blob):
			return "SecretBinary differs from what was stored"
		case gotBinary.SecretString != nil:
			return "SecretString as well as SecretBinary"
		case aws.ToString(gotBinary.VersionId) != aws.ToString(createdBinary.VersionId):
			return "another version answered"
		case !sameStages(gotBinary.VersionStages, stageCurrent):
			return fmt.Sprintf("VersionStages %v, want [AWSCURRENT]", gotBinary.VersionStages)
		}
		return ""
	})

	// One secret to a page, so the SDK's own paginator has to follow NextToken.
	pages := secretsmanager.NewListSecretsPaginator(c, &secretsmanager.ListSecretsInput{
		Filters:    []smtypes.Filter{{Key: smtypes.FilterNameStringTypeName, Values: []string{prefix}}},
		MaxResults: aws.Int32(1),
	})
	var listedNames []string
	var mainEntry *smtypes.SecretListEntry
	pageCount := 0
	err = nil
	for pages.HasMorePages() && pageCount < 100 {
		page, pageErr := pages.NextPage(ctx)
		if pageErr != nil {
			err = pageErr
			break
		}
		pageCount++
		for i, s := range page.SecretList {
			listedNames = append(listedNames, aws.ToString(s.Name))
			if aws.ToString(s.ARN) == arn {
				mainEntry = &page.SecretList[i]
			}
		}
	}
	r.succeeded("ListSecrets", err, map[string]any{"names": sorted(listedNames), "pages": pageCount}, func() string {
		switch {
		case !slices.Equal(sorted(listedNames), []string{binaryName, name}):
			return fmt.Sprintf("listed %v, want the two secrets of this run", listedNames)
		case pageCount < 2:
			return "one page: the paginator did not follow NextToken"
		case mainEntry == nil:
			return "the main secret is not listed under its ARN"
		case !sameStagesMap(mainEntry.SecretVersionsToStages, wantStages):
			return fmt.Sprintf("SecretVersionsToStages %v, want %v", mainEntry.SecretVersionsToStages, wantStages)
		case !maps.Equal(tagMap(mainEntry.Tags), map[string]string{"client": "aws-sdk-go-v2"}):
			return "tags differ"
		}
		return ""
	})

	versions, err := c.ListSecretVersionIds(ctx, &secretsmanager.ListSecretVersionIdsInput{SecretId: aws.String(name)})
	var all *secretsmanager.ListSecretVersionIdsOutput
	var allErr error
	listed := map[string][]string{}
	withDeprecated := map[string][]string{}
	detail = nil
	if err == nil {
		all, allErr = c.ListSecretVersionIds(ctx, &secretsmanager.ListSecretVersionIdsInput{
			SecretId: aws.String(name), IncludeDeprecated: aws.Bool(true)})
		for _, v := range versions.Versions {
			listed[aws.ToString(v.VersionId)] = sorted(v.VersionStages)
		}
		if allErr == nil {
			for _, v := range all.Versions {
				withDeprecated[aws.ToString(v.VersionId)] = sorted(v.VersionStages)
			}
		}
		detail = map[string]any{"arn": aws.ToString(versions.ARN), "versions": listed, "withDeprecated": withDeprecated}
	}
	r.succeeded("ListSecretVersionIds", err, detail, func() string {
		wantAll := maps.Clone(wantStages)
		wantAll[tokens[0]] = nil
		switch {
		case aws.ToString(versions.ARN) != arn:
			return "another secret answered"
		case !sameStagesMap(listed, wantStages):
			return fmt.Sprintf("versions %v, want %v", listed, wantStages)
		case allErr != nil:
			return "with IncludeDeprecated: " + allErr.Error()
		case !sameStagesMap(withDeprecated, wantAll):
			return fmt.Sprintf("with IncludeDeprecated %v, want %v", withDeprecated, wantAll)
		}
		for _, v := range versions.Versions {
			if v.CreatedDate == nil {
				return "a version without CreatedDate"
			}
		}
		return ""
	})

	missing := prefix + "missing"
	batch, err := c.BatchGetSecretValue(ctx, &secretsmanager.BatchGetSecretValueInput{
		SecretIdList: []string{name, binaryArn, missing},
	})
	detail = nil
	var batchErrors []map[string]string
	var batchNames []string
	if err == nil {
		for _, e := range batch.Errors {
			batchErrors = append(batchErrors, map[string]string{
				"secretId": aws.ToString(e.SecretId), "errorCode": aws.ToString(e.ErrorCode)})
		}
		for _, v := range batch.SecretValues {
			batchNames = append(batchNames, aws.ToString(v.Name))
		}
		detail = map[string]any{"names": sorted(batchNames), "errors": batchErrors}
	}
	r.succeeded("BatchGetSecretValue", err, detail, func() string {
		if len(batch.Errors) != 1 || aws.ToString(batch.Errors[0].SecretId) != missing ||
			aws.ToString(batch.Errors[0].ErrorCode) != "ResourceNotFoundException" {
			return fmt.Sprintf("Errors %v, want one ResourceNotFoundException for %s", batchErrors, missing)
		}
		if len(batch.SecretValues) != 2 {
			return fmt.Sprintf("%d SecretValues, want 2", len(batch.SecretValues))
		}
		for _, v := range batch.SecretValues {
			switch aws.ToString(v.Name) {
			case name:
				if aws.ToString(v.SecretString) != values[2] || aws.ToString(v.VersionId) != tokens[2] ||
					aws.ToString(v.ARN) != arn || !sameStages(v.VersionStages, stageCurrent, stagePending) {
					return "the main secret's entry differs"
				}
			case binaryName:
				if !bytes.Equal(v.SecretBinary, blob) || v.SecretString != nil || aws.ToString(v.ARN) != binaryArn {
					return "the binary secret's entry differs"
				}
			default:
				return "an entry for another secret: " + aws.ToString(v.Name)
			}
		}
		return ""
	})

	password, err := c.GetRandomPassword(ctx, &secretsmanager.GetRandomPasswordInput{
		PasswordLength: aws.Int64(40), ExcludePunctuation: aws.Bool(true),
	})
	detail = nil
	var classes map[string]bool
	if err == nil {
		classes = map[string]bool{"upper": false, "lower": false, "digit": false, "other": false}
		for _, ch := range aws.ToString(password.RandomPassword) {
			switch {
			case ch >= 'A' && ch <= 'Z':
				classes["upper"] = true
			case ch >= 'a' && ch <= 'z':
				classes["lower"] = true
			case ch >= '0' && ch <= '9':
				classes["digit"] = true
			default:
				classes["other"] = true
			}
		}
		detail = map[string]any{"length": len(aws.ToString(password.RandomPassword)), "classes": classes}
	}
	r.succeeded("GetRandomPassword", err, detail, func() string {
		switch {
		case len(aws.ToString(password.RandomPassword)) != 40:
			return "not 40 characters"
		case classes["other"]:
			return "characters other than letters and digits"
		case !classes["upper"] || !classes["lower"] || !classes["digit"]:
			return "not every included type is there (RequireEachIncludedType defaults to true)"
		}
		return ""
	})

	tagsNow := func() (map[string]string, error) {
		d, err := c.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
		if err != nil {
			return nil, err
		}
		return tagMap(d.Tags), nil
	}
	for _, t := range []struct {
		step string
		call func() error
		want map[string]string
	}{
		{"TagResource", func() error {
			_, err := c.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: aws.String(arn),
				Tags: []smtypes.Tag{{Key: aws.String("env"), Value: aws.String("e2e")}}})
			return err
		}, map[string]string{"client": "aws-sdk-go-v2", "env": "e2e"}},
		{"UntagResource", func() error {
			_, err := c.UntagResource(ctx, &secretsmanager.UntagResourceInput{SecretId: aws.String(arn),
				TagKeys: []string{"client"}})
			return err
		}, map[string]string{"env": "e2e"}},
	} {
		err := t.call()
		var tags map[string]string
		var tagsErr error
		detail = nil
		if err == nil {
			tags, tagsErr = tagsNow()
			detail = map[string]any{"tags": tags}
		}
		r.succeeded(t.step, err, detail, func() string {
			switch {
			case tagsErr != nil:
				return "DescribeSecret after it failed: " + tagsErr.Error()
			case !maps.Equal(tags, t.want):
				return fmt.Sprintf("tags %v, want %v", tags, t.want)
			}
			return ""
		})
	}

	asked := time.Now()
	deleted, err := c.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{
		SecretId: aws.String(name), RecoveryWindowInDays: aws.Int64(7),
	})
	var inDays float64
	detail = nil
	if err == nil {
		if deleted.DeletionDate != nil {
			inDays = math.Round(deleted.DeletionDate.Sub(asked).Hours()/24*1000) / 1000
		}
		detail = map[string]any{"arn": aws.ToString(deleted.ARN), "name": aws.ToString(deleted.Name), "deletionInDays": inDays}
	}
	r.succeeded("DeleteSecret", err, detail, func() string {
		switch {
		case aws.ToString(deleted.ARN) != arn || aws.ToString(deleted.Name) != name:
			return "another secret answered"
		case deleted.DeletionDate == nil:
			return "no DeletionDate"
		case math.Abs(deleted.DeletionDate.Sub(asked).Hours()-7*24) > 0.25:
			return fmt.Sprintf("DeletionDate %s is not 7 days ahead", deleted.DeletionDate)
		}
		return ""
	})

	_, err = c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
	r.failedWith("GetSecretValueDeleted", "InvalidRequestException", err, isType[*smtypes.InvalidRequestException])

	restored, err := c.RestoreSecret(ctx, &secretsmanager.RestoreSecretInput{SecretId: aws.String(arn)})
	detail = nil
	if err == nil {
		current, currentErr = c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
		detail = map[string]any{"arn": aws.ToString(restored.ARN), "name": aws.ToString(restored.Name)}
		if currentErr == nil {
			detail["secretString"] = aws.ToString(current.SecretString)
		}
	}
	r.succeeded("RestoreSecret", err, detail, func() string {
		switch {
		case aws.ToString(restored.ARN) != arn || aws.ToString(restored.Name) != name:
			return "another secret answered"
		case currentErr != nil:
			return "GetSecretValue after it failed: " + currentErr.Error()
		}
		return checkValue(current, name, arn, values[2], tokens[2], stageCurrent, stagePending)
	})

	forced, err := c.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{
		SecretId: aws.String(name), ForceDeleteWithoutRecovery: aws.Bool(true),
	})
	detail = nil
	if err == nil {
		detail = map[string]any{"arn": aws.ToString(forced.ARN), "name": aws.ToString(forced.Name)}
	}
	r.succeeded("DeleteSecretForce", err, detail, func() string {
		if aws.ToString(forced.ARN) != arn || aws.ToString(forced.Name) != name {
			return "another secret answered"
		}
		return ""
	})

	_, err = c.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	r.failedWith("DescribeSecretPurged", "ResourceNotFoundException", err, isType[*smtypes.ResourceNotFoundException])
}
